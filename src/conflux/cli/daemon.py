"""conflux daemon: serve the REST API (gunicorn, uvicorn workers, Falcon)."""

import ipaddress
import os

from conflux.cli._output import open_engine
from conflux.errors import InputError


def add_parser(sub):
    p = sub.add_parser("daemon", help="serve the REST API (gunicorn + Falcon)",
                       description="Serve the project's REST API (docs/rest.md): gunicorn "
                                   "runs the worker processes, each an event loop (uvicorn "
                                   "with uvloop) serving the Falcon app; one commit service "
                                   "beside them shares each synced commit among the "
                                   "workers' writes. Clients authenticate with X-API-Key "
                                   "(hashes in .conflux/api-keys.toml) or, with --client-ca, "
                                   "a TLS client certificate; .conflux/rbac.toml, when present, "
                                   "decides what each actor may do. SIGTERM finishes the "
                                   "requests in flight, then stops.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                                                          "127.0.0.1)")
    p.add_argument("--port", type=int, default=9400, help="TCP port (default 9400)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=8,
                   help="threads per worker for slow requests: milestones (git), audit "
                        "exports, whole-environment reads, bodies over 256 KiB (default 8); "
                        "writes and watch streams hold none")
    p.add_argument("--grpc-port", type=int, metavar="PORT",
                   help="also serve the gRPC service conflux.v1.ConfluxService (the original "
                        "Conflux's, docs/grpc.md) on this port, with the same address, TLS "
                        "and credentials (default: [daemon] grpc_port in config.toml; none)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--client-ca", metavar="PEM",
                   help="require client certificates signed by this CA (mutual TLS)")
    p.add_argument("--timeout", type=int, default=30,
                   help="seconds a request may take, and SIGTERM's grace (default 30)")
    p.add_argument("--no-ui", action="store_true",
                   help="do not serve the web console at /ui/ (docs/console.md)")
    p.add_argument("--access-log", metavar="FILE", help="write an access log ('-': stdout)")
    p.set_defaults(handler=run)


def run(args):
    from conflux.daemon import Daemon, check_configuration, daemon_options, grpc_options
    from conflux.engine.migration import daemon_lock

    options = daemon_options(host=args.host, port=args.port, workers=args.workers,
                             threads=args.threads, tls_cert=args.tls_cert,
                             tls_key=args.tls_key, client_ca=args.client_ca,
                             timeout=args.timeout, access_log=args.access_log)
    # Every configuration file is checked here, so that a bad one stops the daemon with one
    # line naming file and line (exit 2) instead of each worker failing to boot.
    engine = open_engine(args)
    # a shared hold on the project until the daemon and its workers are gone: 'conflux store
    # migrate' is refused meanwhile
    hold = daemon_lock(engine.root)
    if engine.settings.auth == "none" and not _loopback(args.host):
        raise InputError(f'[daemon] auth = "none" lets callers name themselves: it serves '
                         f"on a loopback address only (127.0.0.1, ::1), not {args.host}")
    access = check_configuration(engine)
    grpc_port = args.grpc_port if args.grpc_port is not None else engine.settings.grpc_port
    grpc = grpc_options(options, grpc_port, host=args.host, port=args.port,
                        anonymous=engine.settings.auth == "none")
    args.engine.close()  # LMDB environments must not cross the workers' fork
    args.engine = None
    Daemon(os.path.abspath(args.dir), options, threads=args.threads, access=access,
           grpc=grpc, ui=not args.no_ui).run()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

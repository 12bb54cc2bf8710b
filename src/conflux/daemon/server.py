"""``conflux daemon``: the REST API under gunicorn, started from Python.

Gunicorn manages the processes; each worker is an event loop serving the ASGI app
(``conflux.daemon.worker``: uvicorn, uvloop, httptools) and opens the LMDB store after the
fork. Writes go to the daemon's one commit service, a process beside the workers
(``conflux.daemon.commits``), over one pipelined connection per worker, so concurrent
requests of every worker share synced commits and none holds a thread while it waits; reads
are served by the workers themselves, slow work (git, exports) in a few threads per worker.
Slow clients cannot starve the workers: request heads have size and time limits, and
keep-alive connections are closed when idle. SIGTERM stops accepting connections and lets the
requests in flight finish (their commits included) before the workers exit.
"""

from __future__ import annotations

import gc
import os
import resource
import ssl

from gunicorn.app.base import BaseApplication

from conflux.errors import InputError

__all__ = ["Daemon", "daemon_options", "grpc_options", "check_configuration", "check_tls"]


def check_tls(cert: str, key: str, client_ca: str | None = None) -> None:
    """Load the certificate, its key and the client CA as the server will, before it serves:
    otherwise a key that is not the certificate's (or not a key at all) starts a daemon whose
    every handshake fails. ``InputError`` naming the file and what is wrong with it."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--client-ca", client_ca)):
        if path is None:
            continue
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise InputError(f"{flag} {path}: cannot read: {exc.strerror or exc}") from None
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert)
    except (ssl.SSLError, ValueError):
        raise InputError(f"--tls-cert {cert}: no PEM certificate in it") from None

    def no_password():
        raise InputError(f"--tls-key {key}: the key is encrypted; give the daemon an "
                         "unencrypted key (readable only by its user)")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=no_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise InputError(f"--tls-key {key}: this private key does not belong to the "
                             f"certificate in {cert}") from None
        raise InputError(f"--tls-key {key}: no PEM private key in it ({exc.reason or exc})"
                         ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, ValueError):
            raise InputError(f"--client-ca {client_ca}: no PEM CA certificate in it") from None


def check_configuration(engine):
    """Read every configuration file of the project as the daemon will, before it starts:
    ``schema.toml`` and ``config.toml`` (read by opening ``engine``), the ``[milestones]``
    settings, ``api-keys.toml``, ``rbac.toml``, ``webhooks.toml`` and ``keys.json``. The first
    problem is raised as an ``InputError`` naming the file and line, so that a bad file stops
    the daemon with one line instead of every worker failing to boot. Returns the
    credentials, which the workers inherit and keep up to date (``conflux.api.access``)."""
    from conflux.api.access import Access
    from conflux.milestones import Milestones
    from conflux.signing import REGISTRY_FILE, Registry
    from conflux.webhooks import WEBHOOKS_FILE, load_webhooks

    Milestones(engine)
    load_webhooks(os.path.join(engine.root, WEBHOOKS_FILE), schema=engine.schema)
    Registry(os.path.join(engine.root, REGISTRY_FILE)).refresh()
    engine.policy.load()
    return Access.load(engine.root, anonymous=engine.settings.auth == "none")


def daemon_options(*, host: str = "127.0.0.1", port: int = 9400, workers: int = 2,
                   threads: int = 8, tls_cert: str | None = None, tls_key: str | None = None,
                   client_ca: str | None = None, timeout: int = 30,
                   access_log: str | None = None) -> dict:
    """Gunicorn settings for the daemon; bad combinations are refused up front."""
    if (tls_cert is None) != (tls_key is None):
        raise InputError("--tls-cert and --tls-key go together")
    if client_ca is not None and tls_cert is None:
        raise InputError("--client-ca (mutual TLS) needs --tls-cert and --tls-key")
    for path in (tls_cert, tls_key, client_ca):
        if path is not None and not os.path.isfile(path):
            raise InputError(f"{path}: no such file")
    if tls_cert is not None:
        check_tls(tls_cert, tls_key, client_ca)
    if not 1 <= workers <= 64 or not 1 <= threads <= 256:
        raise InputError("--workers must be 1 to 64 and --threads 1 to 256")
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port} is not a TCP port")
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "conflux.daemon.worker.Worker",
        "worker_connections": WORKER_CONNECTIONS,
        "timeout": timeout,            # a worker whose loop is stuck this long is restarted
        "graceful_timeout": timeout,   # SIGTERM: requests in flight get this long to finish
        "keepalive": 5,
        "accesslog": access_log,
        "proc_name": "conflux-daemon",
        "post_worker_init": _settle_worker,
    }
    if tls_cert is not None:
        options.update(certfile=tls_cert, keyfile=tls_key)
        if client_ca is not None:
            options.update(ca_certs=client_ca, cert_reqs=ssl.CERT_REQUIRED)
    return options


def grpc_options(options: dict, grpc_port: int | None, *, host: str, port: int,
                 anonymous: bool = False) -> dict | None:
    """Where and how the gRPC server listens (``daemon_options``' address and TLS), or None
    without a gRPC port; ``anonymous``: ``[daemon] auth = "none"`` as checked at the start
    (a restarted server does not read it again)."""
    if grpc_port is None:
        return None
    if not 1 <= grpc_port <= 65535:
        raise InputError(f"--grpc-port {grpc_port} is not a TCP port")
    if grpc_port == port:
        raise InputError(f"--grpc-port {grpc_port} is the REST port too: give them two ports")
    tls = None
    if options.get("certfile") is not None:
        tls = (options["certfile"], options["keyfile"], options.get("ca_certs"))
    return {"host": host, "port": grpc_port, "tls": tls, "anonymous": anonymous}


#: Open connections a worker serves at once (watch streams included); past it, 503.
WORKER_CONNECTIONS = 4096


class Daemon(BaseApplication):
    """Gunicorn application serving one Conflux project."""

    def __init__(self, directory: str, options: dict, *, threads: int = 8, on_ready=None,
                 access=None, grpc: dict | None = None, ui: bool = True):
        self.directory = directory
        self.ui = ui  # the web console at /ui/
        self.grpc = grpc  # grpc_options(): the gRPC server's address and TLS, or None
        self.options = options
        self.threads = threads
        self.on_ready = on_ready
        self.access = access  # checked before the start; None: each worker reads the files
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if value is not None:
                self.cfg.set(key, value)
        if self.on_ready is not None:
            self.cfg.set("when_ready", lambda server: self.on_ready(server))
        self.cfg.set("post_fork", _forget_helpers)
        # NOTE: gunicorn 25.1+ opens a control socket at one fixed path per user
        # ($HOME/.gunicorn/gunicorn.ctl), through which worker counts can be changed and the
        # server reloaded: a second daemon on the machine would take it over from the first,
        # and Conflux manages its workers itself.
        if "control_socket_disable" in self.cfg.settings:
            self.cfg.set("control_socket_disable", True)

    def run(self):
        # The helper processes beside the workers (conflux.daemon.supervisor): the commit
        # service, webhook delivery when webhooks.toml exists, the milestone scheduler when
        # config.toml has a schedule, the replicator when it names a shared op log ([store]
        # url), the gRPC server with a gRPC port. Started before gunicorn binds,
        # stopped when it exits, after the workers have answered their last requests. The
        # workers' SystemExit unwinds through here too, hence the pid check.
        from conflux.daemon.commits import CommitProcess
        from conflux.daemon.delivery import Delivery
        from conflux.daemon.replicator import replicator_start
        from conflux.daemon.scheduler import scheduler_start
        from conflux.engine import CONFLUX_DIR, Settings

        settings = Settings.load(os.path.join(self.directory, CONFLUX_DIR, "config.toml"))
        _open_files_for(self.options["workers"] * WORKER_CONNECTIONS)
        delivery = Delivery(self.directory)  # a process once there is a webhook
        self.commits = CommitProcess.start(self.directory)
        scheduler = replicator = grpc = None
        master = os.getpid()
        try:
            scheduler = scheduler_start(self.directory)  # None without a milestone schedule
            replicator = replicator_start(self.directory, settings.store_url)  # None: no [store]
            if self.grpc is not None:
                from conflux.rpc.server import GrpcProcess

                grpc = GrpcProcess.start(self.directory, self.commits.path,
                                         threads=self.threads, **self.grpc)
            super().run()
        finally:
            if os.getpid() == master:
                if grpc is not None:
                    grpc.stop()
                if replicator is not None:
                    replicator.stop()
                if scheduler is not None:
                    scheduler.stop()
                self.commits.stop()
                delivery.stop()

    def load(self):
        # Runs in each worker after the fork: LMDB environments must not cross a fork.
        from conflux.api import create_app
        from conflux.api.app import slow_work_pool
        from conflux.api.access import Access
        from conflux.engine import Engine
        from conflux.daemon.commits import CommitClient

        engine = Engine(self.directory)
        pool = slow_work_pool(self.threads)
        committer = CommitClient(self.commits.path, engine, pool=pool)
        access = self.access or Access.load(engine.root,
                                            anonymous=engine.settings.auth == "none")
        engine.policy.load()
        access.also.append(engine.policy.refresh)  # rbac.toml followed by the same thread
        access.watch()
        return create_app(engine, access, committer=committer, pool=pool, ui=self.ui)


def _open_files_for(connections: int) -> None:
    """Raise the soft limit on open files towards what the workers' connections need (each
    an open socket), as far as the hard limit allows: many idle watch streams are cheap, but
    each is a file descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _settle_worker(worker) -> None:
    """Once a worker has loaded the app: its objects (the schema, the engine, Falcon's
    routes) go to the collector's permanent generation, never to be traversed again, and
    the collector runs after every 20,000 new objects instead of 700. PERF: a 1,000-op
    batch parses into a few thousand objects that live until it is answered; with the
    defaults the collector traversed them (and the app) again and again, about 10 % of the
    daemon's CPU per batch; for single-op requests about 4 % (bench/http_ingest.py)."""
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)


def _forget_helpers(server, worker) -> None:
    """gunicorn's ``post_fork``, in the new worker."""
    from conflux.daemon.supervisor import HelperProcess

    HelperProcess.forget_in_worker()
    # the master's signals caught by the handlers this worker inherited (Worker.init_signals)
    worker.master_signals = server.SIG_QUEUE

"""The daemon's gRPC server: a helper process beside gunicorn's workers
(``conflux.daemon.supervisor``) serving ``conflux.v1.ConfluxService`` on ``--grpc-port``.

One process, one ``grpc.aio`` event loop: writes go to the daemon's commit service like the
workers' (``CommitClient``), reads and watch streams come from the shared store. The
credentials (``api-keys.toml``) and access rules (``rbac.toml``) are followed as the workers
follow them; TLS and mutual TLS use the daemon's certificate, key and client CA.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from conflux.daemon.supervisor import HelperProcess, exited, helper_stop_event
from conflux.errors import InputError

__all__ = ["GrpcProcess"]

log = logging.getLogger("conflux.grpc")


class GrpcProcess(HelperProcess):
    name = "conflux-grpc"
    START_S = 30.0

    @classmethod
    def start(cls, directory: str, commits: str, *, host: str, port: int,
              tls: tuple | None = None, threads: int = 8, anonymous: bool = False
              ) -> GrpcProcess:
        """Start the server and wait until it listens; ``InputError`` when it cannot (the
        port is taken): the daemon then does not start."""
        _bindable(host, port)
        self = cls(_serve, (os.path.abspath(directory), commits, host, port, tls, threads,
                            anonymous, os.getpid()))
        self.launch()
        deadline = time.monotonic() + self.START_S
        while not _listening(host, port):
            if exited(self.process) or time.monotonic() > deadline:
                self.stop(1.0)
                raise InputError(f"--grpc-port {port}: the gRPC server could not listen on "
                                 f"{host}:{port} (in use, or not an address of this machine; "
                                 "its log says which)")
            time.sleep(0.02)
        return self


def _bindable(host: str, port: int) -> None:
    """``InputError`` unless the address is free to listen on (as the server will: with
    SO_REUSEADDR, so a port left in TIME_WAIT is free)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise InputError(f"--grpc-port {port}: cannot listen on {host}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise InputError(f"--grpc-port {port}: cannot listen on {host}:{port}: "
                             f"{exc.strerror or exc}") from None


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _serve(directory: str, commits: str, host: str, port: int, tls, threads: int,
           anonymous: bool, parent: int) -> None:
    logging.basicConfig(level=logging.INFO, format="[conflux-grpc %(process)d] "
                                                   "%(levelname)s %(message)s")
    stop = helper_stop_event(parent, log.name)
    asyncio.run(_main(directory, commits, host, port, tls, threads, anonymous, stop))


async def _main(directory, commits, host, port, tls, threads, anonymous, stop) -> None:
    import grpc

    from conflux.api.access import Access
    from conflux.api.app import slow_work_pool
    from conflux.api.watch import LogFollower
    from conflux.daemon.commits import CommitClient
    from conflux.engine import Engine
    from conflux.rpc import conflux_pb2_grpc as pb_grpc
    from conflux.rpc.service import MAX_MESSAGE, ConfluxService

    engine = Engine(directory)
    pool = slow_work_pool(threads)
    committer = CommitClient(commits, engine, pool=pool)
    access = Access.load(engine.root, anonymous=anonymous)
    engine.policy.load()
    access.also.append(engine.policy.refresh)
    access.watch()
    stall = float(os.environ.get("CONFLUX_GRPC_STALL_S", "30"))
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.so_reuseport", 0),  # a second daemon on the port fails, as the REST port does
        ("grpc.keepalive_time_ms", 60_000),  # idle watchers: dead peers are found
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ])
    pb_grpc.add_ConfluxServiceServicer_to_server(
        ConfluxService(engine, access, committer, LogFollower(engine, 0.05), pool,
                       stall_s=stall), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, _credentials(*tls))
    except RuntimeError as exc:
        log.error("cannot listen on %s: %s", address, exc)
        return
    if not bound:
        log.error("cannot listen on %s", address)
        return
    await server.start()
    log.info("serving conflux.v1.ConfluxService on %s%s", address,
             "" if tls is None else " (TLS)" if tls[2] is None else " (mutual TLS)")
    try:
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    finally:
        LogFollower.close_all()  # watchers end; they resume elsewhere with after_seq
        await server.stop(5.0)
        committer.close()
        pool.shutdown(wait=False)
        engine.close()


def _credentials(cert: str, key: str, client_ca: str | None):
    import grpc

    with open(cert, "rb") as fh:
        chain = fh.read()
    with open(key, "rb") as fh:
        private = fh.read()
    root = None
    if client_ca is not None:
        with open(client_ca, "rb") as fh:
            root = fh.read()
    return grpc.ssl_server_credentials([(private, chain)], root_certificates=root,
                                       require_client_auth=root is not None)

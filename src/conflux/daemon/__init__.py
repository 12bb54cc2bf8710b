"""The daemon's processes: the gunicorn server of the REST API (``server``), the helper
processes beside its workers and their supervision (``supervisor``): the commit service
(``commits``), webhook delivery (``delivery``), the milestone scheduler (``scheduler``)
and the gRPC server (``conflux.rpc.server``).

The library below (the engine, ``conflux.milestones``, ``conflux.webhooks``) knows nothing of
these processes; they are handed an engine, or open one, and drive it.
"""

__all__ = ["Daemon", "check_configuration", "check_tls", "daemon_options", "grpc_options"]


def __getattr__(name: str):
    # The server's names are imported when asked for: a helper process imports its own module
    # of this package, and has no use for gunicorn and ssl.
    if name in __all__:
        from conflux.daemon import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The engine API: the one place Conflux's logic lives (the CLI and REST API are thin over it).

PERF: the names are imported when first asked for, so that a command which needs only a part
(``conflux rbac`` the policy, ``conflux keys`` the project's directory) does not pay for the
store and the merge kernel on its start.
"""

__all__ = ["Engine", "Ack", "Settings", "CONFLUX_DIR", "project_root"]

_HOME = {"Engine": "engine", "Ack": "acks", "Settings": "settings", "CONFLUX_DIR": "settings",
         "project_root": "settings"}


def __getattr__(name):
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'conflux.engine' has no attribute {name!r}")
    # __import__, not importlib.import_module: the import statement's path, which
    # ``python -X importtime`` (and tests/test_startup.py) sees
    value = getattr(__import__(f"conflux.engine.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value

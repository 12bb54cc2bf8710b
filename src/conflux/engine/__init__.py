"""The engine API: the one place Conflux's logic lives (the CLI and REST API are thin over it)."""

from conflux.engine.engine import Ack, CONFLUX_DIR, Engine, project_root, Settings

__all__ = ["Engine", "Ack", "Settings", "CONFLUX_DIR", "project_root"]

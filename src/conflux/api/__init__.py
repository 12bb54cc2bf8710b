"""Conflux's REST API (docs/rest.md): a Falcon app built by ``create_app``, thin over the engine.

Resources are nouns with ``on_get``/``on_post``; authentication and access control are
middleware and hooks; every error becomes a JSON body through one registered handler.
"""

from conflux.api.app import create_app

__all__ = ["create_app"]

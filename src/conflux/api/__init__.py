"""Conflux's REST API (docs/rest.md): a Falcon app built by ``create_app``, thin over the engine.

Resources are nouns with ``on_get``/``on_post``, a module per group of routes (``ops``,
``entities``, ``review``, ``milestones``, ``audit``, ``service``, ``watch``); request bodies are
held to the schemas declared once in ``bodies`` (the OpenAPI document is built from them);
authentication is middleware (``access``), access control the engine's, given the actor;
every error becomes a JSON body through one registered handler.
"""

from conflux.api.app import create_app

__all__ = ["create_app"]

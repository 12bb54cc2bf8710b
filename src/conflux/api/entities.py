"""Resolved state: ``GET /v1/state`` (an environment), ``GET /v1/entities/{id}`` (one
entity) and ``GET /v1/blame/{id}`` (who set each field, and when)."""

from __future__ import annotations

from conflux.api.media import write_body
from conflux.api.params import env_param, Resource


class State(Resource):
    async def on_get(self, req, resp):
        env = env_param(req, self.ctx.engine)
        await self.ctx.blocking(self._state, req, resp, env)  # a whole environment

    def _state(self, req, resp, env):
        write_body(req, resp, {"env": env, "entities": self.ctx.engine.state(
            env, reader=req.context.actor)})


class Tree(Resource):
    """``GET /v1/tree``: the entity tree as an environment shows it (``Engine.tree``);
    ``entity``: one entity's place (``Engine.place``)."""

    async def on_get(self, req, resp):
        env = env_param(req, self.ctx.engine)
        await self.ctx.blocking(self._tree, req, resp, env)  # every place of the tree

    def _tree(self, req, resp, env):
        engine, entity = self.ctx.engine, req.get_param("entity")
        if entity is not None:
            write_body(req, resp, {"env": env, "entity_id": entity,
                                   **engine.place(entity, env, reader=req.context.actor)})
            return
        write_body(req, resp, engine.tree(env, reader=req.context.actor))


def _fields(engine, fields) -> dict:
    core = engine.core
    return {name: {**item, "hlc": core.hlc_format(item["hlc"]) if item.get("hlc") else None}
            for name, item in fields.items()}


class _EntityView(Resource):
    """``GET /v1/<noun>/{id}``: one entity's fields as ``engine.<noun>`` reads them."""

    async def on_get(self, req, resp, entity_id):
        ctx = self.ctx
        env = env_param(req, ctx.engine)
        fields = self.read(ctx.engine, entity_id, env, req.context.actor)
        write_body(req, resp, {"entity_id": entity_id, "env": env,
                               "fields": _fields(ctx.engine, fields)})


class Entity(_EntityView):
    @staticmethod
    def read(engine, entity_id, env, reader):
        return engine.get(entity_id, env, reader=reader)


class Blame(_EntityView):
    @staticmethod
    def read(engine, entity_id, env, reader):
        return engine.blame(entity_id, env, reader=reader)

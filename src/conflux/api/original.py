"""The original Conflux's read routes, in its shapes (``conflux.original``): ``GET /health``,
``/v1/state/{entity_path}``, ``/v1/log``, ``/v1/log/{entity_path}``, ``/v1/envs``,
``/v1/envs/{env_name}/state`` and ``/v1/envs/diff``. Its writes are ``conflux.api.ops``'."""

from __future__ import annotations

from conflux import __version__
from conflux.api.media import write_body
from conflux.api.params import env_param, int_param, Resource
from conflux.errors import InputError
from conflux.original import entity_state, env_diff, environments, log_entry


class Health(Resource):
    auth = False

    async def on_get(self, req, resp):
        write_body(req, resp, {"status": "ok", "version": __version__})


class EntityState(Resource):
    async def on_get(self, req, resp, entity_path):
        engine = self.ctx.engine
        env = env_param(req, engine)
        reader = req.context.actor
        fields = {name: item["value"] for name, item in
                  engine.get(entity_path, env, reader=reader).items()}
        place = engine.place(entity_path, env, reader=reader)
        write_body(req, resp, {**entity_state(entity_path, fields, place=place), "env": env})


class Log(Resource):
    """``GET /v1/log``: newest first, ``limit`` (100) from ``offset`` (0), of one entity
    (``entity_id``) or actor (``actor_id``); ``total`` is every operation of the log."""

    async def on_get(self, req, resp, entity_path=None):
        await self.ctx.blocking(self._log, req, resp, entity_path or req.get_param("entity_id"))

    def _log(self, req, resp, entity):
        engine = self.ctx.engine
        limit = int_param(req, "limit", 100, 1, 10_000)
        # (the page is read whole from the newest op: a bounded offset bounds the read)
        offset = int_param(req, "offset", 0, 0, 100_000)
        if entity is not None:
            engine.schema.split_entity_id(entity)
        actor = req.get_param("actor_id")
        if actor is not None and not actor:
            raise InputError("actor_id names no actor", field="actor_id")
        ops = engine.log(limit=offset + limit + 1, entity=entity, actor=actor,
                         reader=req.context.actor)
        page = ops[offset:offset + limit]
        base = engine.schema.base_env
        write_body(req, resp, {
            "operations": [log_entry(engine.op_dict(op), base) for op in page],
            "total": engine.last_seq(), "has_more": len(ops) > offset + limit})


class Envs(Resource):
    async def on_get(self, req, resp):
        write_body(req, resp, environments(self.ctx.engine.schema))


class EnvState(Resource):
    """``GET /v1/envs/{env_name}/state``: every entity of an environment, each field's value
    and (``field_sources``) the environment it comes from: the overlay that holds it,
    ``"base"`` for the base environment, ``"default"`` for the schema's default."""

    async def on_get(self, req, resp, env_name):
        self.ctx.engine.schema.env_chain(env_name)  # 404 for an unknown environment
        await self.ctx.blocking(self._state, req, resp, env_name)

    def _state(self, req, resp, env):
        engine = self.ctx.engine
        base = engine.schema.base_env
        state = engine.state(env, reader=req.context.actor, sources=True)
        tree = engine.tree(env, reader=req.context.actor)
        places = tree["entities"]
        entities = [entity_state(
            entity_id, {f: value for f, (value, _) in fields.items()},
            {f: "default" if source is None else "base" if source == base else source
             for f, (_, source) in fields.items()}, places.get(entity_id))
            for entity_id, fields in state.items()]
        # the roots: every entity with no parent, the tree's (in sibling order) first
        roots = [e for e in tree["roots"] if e in state] + [e for e in state
                                                           if e not in places]
        write_body(req, resp, {"environment": env, "entities": entities,
                               "root_entities": roots})


class EnvDiff(Resource):
    async def on_get(self, req, resp):
        ends = []
        for name in ("from", "to"):
            value = req.get_param(name)
            if value is None:
                raise InputError(f"{name} is required: the two environments to compare",
                                 field=name)
            ends.append(value)  # an unknown environment: the engine's 404
        await self.ctx.blocking(self._diff, req, resp, *ends)

    def _diff(self, req, resp, source, target):
        write_body(req, resp, env_diff(self.ctx.engine, source, target,
                                       reader=req.context.actor))

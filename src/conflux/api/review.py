"""Decisions people make about the state: ``GET /v1/conflicts``, ``POST
/v1/conflicts/resolve`` and ``POST /v1/promote``."""

from __future__ import annotations

from conflux.api.bodies import check
from conflux.api.media import read_body, write_body
from conflux.api.params import Resource


class Conflicts(Resource):
    async def on_get(self, req, resp):
        await self.ctx.blocking(self._conflicts, req, resp)

    def _conflicts(self, req, resp):
        ctx = self.ctx
        env = req.get_param("env")
        if env is not None:
            ctx.engine.schema.env_chain(env)
        core = ctx.engine.core
        found = [c | {"candidates": [x | {"hlc": core.hlc_format(x["hlc"])}
                                     for x in c["candidates"]]}
                 for c in ctx.engine.conflicts(env, reader=req.context.actor)]
        write_body(req, resp, {"conflicts": found})


class Resolve(Resource):
    async def on_post(self, req, resp):
        body = await read_body(req, self.ctx.bodies, self.ctx.body_limit)
        await self.ctx.blocking(self._resolve, req, resp, body)  # a synced commit of its own

    def _resolve(self, req, resp, body):
        ctx = self.ctx
        check("Resolve", body)
        ack = ctx.engine.resolve(body["entity_id"], body["field"], body["value"],
                                 req.context.actor, env=body.get("env"),
                                 intent=body.get("intent") or "")
        write_body(req, resp, ack.to_dict(ctx.engine.core))


class Promote(Resource):
    async def on_post(self, req, resp):
        body = await read_body(req, self.ctx.bodies, self.ctx.body_limit)
        await self.ctx.blocking(self._promote, req, resp, body)  # a synced commit of its own

    def _promote(self, req, resp, body):
        ctx = self.ctx
        check("Promote", body)
        entities = body.get("entities")
        ack = ctx.engine.promote(body["from"], body["to"], entities or None, req.context.actor,
                                 intent=body.get("intent") or "",
                                 dry_run=bool(body.get("dry_run")),
                                 fields=body.get("fields") or None)
        write_body(req, resp, ack.to_dict(ctx.engine.core))

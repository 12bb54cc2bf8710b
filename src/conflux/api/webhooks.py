"""``/v1/webhooks``: the original Conflux's webhook management (``conflux.webhook_registry``):
register, list, read, change and remove webhooks over REST (the ``admin`` permission)."""

from __future__ import annotations

from conflux.api.media import read_body, write_body
from conflux.api.params import Resource
from conflux.webhook_registry import Webhooks as Management


class Webhooks(Resource):
    async def on_get(self, req, resp):
        hooks = await self.ctx.blocking(lambda: Management(self.ctx.engine,
                                                           req.context.actor).all())
        write_body(req, resp, {"webhooks": hooks, "total": len(hooks)})

    async def on_post(self, req, resp):
        body = await read_body(req, self.ctx.bodies, self.ctx.body_limit)
        write_body(req, resp, await self.ctx.blocking(
            lambda: Management(self.ctx.engine, req.context.actor).add(body)))


class WebhookItem(Resource):
    async def on_get(self, req, resp, webhook_id):
        write_body(req, resp, await self.ctx.blocking(
            lambda: Management(self.ctx.engine, req.context.actor).one(webhook_id)))

    async def on_put(self, req, resp, webhook_id):
        body = await read_body(req, self.ctx.bodies, self.ctx.body_limit)
        write_body(req, resp, await self.ctx.blocking(
            lambda: Management(self.ctx.engine, req.context.actor).update(webhook_id, body)))

    async def on_delete(self, req, resp, webhook_id):
        write_body(req, resp, await self.ctx.blocking(
            lambda: Management(self.ctx.engine, req.context.actor).delete(webhook_id)))

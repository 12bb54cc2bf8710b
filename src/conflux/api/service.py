"""The service itself: ``GET /v1/health`` (unauthenticated), ``GET /v1/openapi.json``
(unauthenticated) and ``GET /v1/status``."""

from __future__ import annotations

from conflux.api.media import write_body
from conflux.api.params import Resource


class Health(Resource):
    auth = False

    async def on_get(self, req, resp):
        engine = self.ctx.engine
        write_body(req, resp, {"status": "ok", "core": engine.core.IMPLEMENTATION})


class OpenApi:
    auth = False

    def __init__(self, document):
        self.document = document

    async def on_get(self, req, resp):
        write_body(req, resp, self.document)


class Status(Resource):
    async def on_get(self, req, resp):
        await self.ctx.blocking(self._status, req, resp)

    def _status(self, req, resp):
        from conflux.status import project_status

        status = project_status(self.ctx.engine, reader=req.context.actor)
        status["violation_list"] = self.ctx.engine.violations()
        status.pop("directory", None)  # a server path is not the client's business
        write_body(req, resp, status)

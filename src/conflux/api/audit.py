"""``GET /v1/audit/export``: the op log as signed JSON Lines (``conflux.audit``)."""

from __future__ import annotations

from conflux.api.params import Resource


class AuditExport(Resource):
    """The op log as JSON Lines, streamed (``conflux.audit``); the ``admin`` action."""

    def on_get(self, req, resp):
        from conflux.audit import export_lines

        ctx = self.ctx
        lines = export_lines(ctx.engine, since=req.get_param("since"),
                             until=req.get_param("until"), reader=req.context.actor)
        resp.content_type = "application/x-ndjson"
        resp.stream = lines

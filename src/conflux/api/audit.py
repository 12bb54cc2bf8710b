"""``GET /v1/audit/export``: the op log as signed JSON Lines (``conflux.audit``)."""

from __future__ import annotations

from conflux.api.params import flag_param, Resource

#: Lines read (and chained) per trip to a worker thread.
_LINES_PER_CHUNK = 512


class AuditExport(Resource):
    """The op log as JSON Lines, streamed (``conflux.audit``); the ``admin`` action."""

    async def on_get(self, req, resp):
        from conflux.audit import export_lines, summary

        ctx = self.ctx
        what = {"since": req.get_param("since"), "until": req.get_param("until"),
                "actor": req.get_param("actor"), "entity": req.get_param("entity"),
                "reader": req.context.actor}
        # the reader's right, since and until are checked here, before the answer starts;
        # the original's headers are counted first (a pass over the range, with the
        # signatures checked when asked)
        verify = flag_param(req, "verify")
        count, failed = await ctx.blocking(summary, ctx.engine, **what,
                                           registry=ctx.engine.signatures if verify else None)
        lines = await ctx.blocking(export_lines, ctx.engine, **what)
        resp.content_type = "application/x-ndjson"
        resp.set_header("X-Audit-Operations-Exported", str(count))
        if verify:
            resp.set_header("X-Audit-Signature-Failures", str(failed))
        resp.stream = self._chunks(iter(lines))

    async def _chunks(self, lines):
        # the log is read and hashed in a worker thread, a chunk of lines at a time
        while chunk := await self.ctx.blocking(_take, lines, _LINES_PER_CHUNK):
            yield chunk


def _take(lines, n: int) -> bytes:
    out = []
    for line in lines:
        out.append(line)
        if len(out) == n:
            break
    return b"".join(out)


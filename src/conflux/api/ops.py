"""``/v1/ops``: writes (one op, or a batch applied atomically) and the op log by sequence."""

from __future__ import annotations

from conflux.api.bodies import check, check_ops
from conflux.api.media import parse_body, request_body, write_body
from conflux.api.params import flag_param, int_param, Resource
from conflux.errors import ValidationError

#: Bodies up to this size are parsed, checked and answered on the event loop; bigger ones (a
#: 16 MiB import takes about a second) in a thread, so the worker's other requests go on.
INLINE_BYTES = 256 << 10


class Ops(Resource):
    """``POST /v1/ops``: one op or ``{"ops": [...]}``, atomic; ``GET``: the log by sequence."""

    async def on_post(self, req, resp):
        ctx = self.ctx
        async with request_body(req, ctx.bodies, ctx.body_limit) as data:  # until answered
            here = len(data) <= INLINE_BYTES
            dry_run = bool(req.query_string) and flag_param(req, "dry_run")
            single, raw_ops = await ctx.here_or_blocking(here, self._admit, req, data, dry_run)
            actor = req.context.actor
            if dry_run:
                acks = await ctx.here_or_blocking(here, ctx.engine.apply, raw_ops, actor,
                                                  dry_run=True)
            else:
                acks = await ctx.committer.apply(raw_ops, actor, admitted=True)
            await ctx.here_or_blocking(here, self._answer, req, resp, acks, single, dry_run)

    def _admit(self, req, data: bytes, dry_run: bool):
        """The body's ops, their shapes checked and the actor's right to each (and their
        signatures) verified; whether the body was one op."""
        body = parse_body(req, data)
        engine = self.ctx.engine
        actor = req.context.actor
        single = not (isinstance(body, dict) and "ops" in body and "type" not in body)
        if single:
            raw_ops = [body]
            if not isinstance(body, dict):
                check("Op", body)
        else:
            if set(body) != {"ops"} or not isinstance(body["ops"], list) or not body["ops"]:
                raise ValidationError('a batch is {"ops": [op, ...]} with at least one op',
                                      field="ops")
            raw_ops = body["ops"]
        check_ops(engine, raw_ops, actor, batch=not single)
        if not dry_run:
            engine.admit(raw_ops, actor)
        return single, raw_ops

    def _answer(self, req, resp, acks, single: bool, dry_run: bool) -> None:
        core = self.ctx.engine.core
        answers = [ack.to_dict(core) for ack in acks]
        if dry_run:
            for answer in answers:
                answer["dry_run"] = True
        write_body(req, resp, answers[0] if single else {"ops": answers})

    async def on_get(self, req, resp):
        ctx = self.ctx
        after = int_param(req, "after", 0, 0, 2 ** 63)
        limit = int_param(req, "limit", 100, 1, 10_000)
        await ctx.blocking(self._log, req, resp, after, limit)

    def _log(self, req, resp, after: int, limit: int) -> None:
        engine = self.ctx.engine
        ops = engine.log(start=after + 1, reverse=False, limit=limit, reader=req.context.actor)
        entries = [engine.op_dict(op) for op in ops]
        write_body(req, resp, {"ops": entries, "next": entries[-1]["seq"] if entries else after})

"""``/v1/ops``: writes (one op, or a batch applied atomically) and the op log by sequence."""

from __future__ import annotations

from conflux.api.bodies import check, check_ops
from conflux.api.media import parse_body, request_body, write_body
from conflux.api.params import flag_param, int_param, Resource
from conflux.errors import ValidationError
from conflux.original import answers, expand

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
            single, raw_ops, groups = await ctx.here_or_blocking(here, self._admit, req, data,
                                                                 dry_run)
            acks = await _commit(ctx, raw_ops, req.context.actor, here, dry_run)
            await ctx.here_or_blocking(here, self._answer, req, resp, acks, single, dry_run,
                                       raw_ops, groups)

    def _admit(self, req, data: bytes, dry_run: bool):
        """The body's ops (the original's translated), their shapes checked and the actor's
        right to each (and their signatures) verified; whether the body was one op; how many
        ops each became (``conflux.original.expand``)."""
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
        raw_ops, groups = admitted(engine, raw_ops, actor, batch=not single, dry_run=dry_run)
        return single, raw_ops, groups

    def _answer(self, req, resp, acks, single: bool, dry_run: bool, ops, groups) -> None:
        answers = _answers(self.ctx.engine, acks, dry_run, ops, groups, req.context.actor)
        write_body(req, resp, answers[0] if single else {"ops": answers})

    async def on_get(self, req, resp):  # the log by sequence
        ctx = self.ctx
        after = int_param(req, "after", 0, 0, 2 ** 63)
        limit = int_param(req, "limit", 100, 1, 10_000)
        await ctx.blocking(self._log, req, resp, after, limit)

    def _log(self, req, resp, after: int, limit: int) -> None:
        engine = self.ctx.engine
        ops = engine.log(start=after + 1, reverse=False, limit=limit, reader=req.context.actor)
        entries = [engine.op_dict(op) for op in ops]
        write_body(req, resp, {"ops": entries, "next": entries[-1]["seq"] if entries else after})


class OriginalBatch(Resource):
    """``POST /v1/ops/batch``: the original Conflux's batch, ``{"operations": [op, ...]}``,
    each op in its vocabulary or Conflux's; atomic here (the original applied them one by
    one). Answers ``{"results": [...], "total": n, "conflicts": k}``."""

    async def on_post(self, req, resp):
        ctx = self.ctx
        async with request_body(req, ctx.bodies, ctx.body_limit) as data:
            here = len(data) <= INLINE_BYTES
            raw_ops, groups = await ctx.here_or_blocking(here, self._admit, req, data)
            acks = await _commit(ctx, raw_ops, req.context.actor, here, False)
            await ctx.here_or_blocking(here, self._answer, req, resp, acks, raw_ops, groups)

    def _admit(self, req, data: bytes):
        body = parse_body(req, data)
        if not (isinstance(body, dict) and set(body) == {"operations"} and
                isinstance(body["operations"], list) and body["operations"]):
            raise ValidationError('a batch is {"operations": [op, ...]} with at least one op',
                                  field="operations")
        return admitted(self.ctx.engine, body["operations"], req.context.actor, batch=True,
                        dry_run=False)

    def _answer(self, req, resp, acks, ops, groups) -> None:
        results = _answers(self.ctx.engine, acks, False, ops, groups, req.context.actor)
        write_body(req, resp, {"results": results, "total": len(results),
                               "conflicts": sum(r["conflict"] for r in results)})


def admitted(engine, raw_ops: list, actor, *, batch: bool, dry_run: bool):
    """``raw_ops`` in Conflux's terms (``conflux.original.expand``), their shapes checked and
    (but for a dry run) the actor's right to each and their signatures verified; and how
    many Conflux ops each became (None: one each). The gRPC service admits its ops here too."""
    raw_ops, groups = expand(raw_ops, engine.schema.base_env)
    check_ops(engine, raw_ops, actor, batch=batch)
    if not dry_run:
        engine.admit(raw_ops, actor)
    return raw_ops, groups


async def _commit(ctx, raw_ops: list, actor, here: bool, dry_run: bool):
    if dry_run:
        return await ctx.here_or_blocking(here, ctx.engine.apply, raw_ops, actor, dry_run=True)
    return await ctx.committer.apply(raw_ops, actor, admitted=True)


def _answers(engine, acks, dry_run: bool, ops, groups, reader) -> list[dict]:
    """Each op's answer: Conflux's acknowledgement with the original's keys
    (``conflux.original.answers``)."""
    out = [ack.to_dict(engine.core) for ack in acks]
    if not dry_run:
        return answers(engine, ops, groups, out, reader)
    for answer in out:
        answer["dry_run"] = True
    return out

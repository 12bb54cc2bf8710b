"""``/v1/ops``: writes (one op, or a batch applied atomically) and the op log by sequence."""

from __future__ import annotations

from conflux.api.bodies import check
from conflux.api.media import parse_body, read_bytes, write_body
from conflux.api.params import flag_param, int_param, Resource
from conflux.errors import ValidationError


class Ops(Resource):
    """``POST /v1/ops``: one op or ``{"ops": [...]}``, atomic; ``GET``: the log by sequence."""

    def on_post(self, req, resp):
        data = read_bytes(req, self.ctx.body_limit)
        with self.ctx.bodies.hold(len(data)):  # until the answer is built
            self._post(req, resp, parse_body(req, data))

    def _post(self, req, resp, body):
        ctx = self.ctx
        single = not (isinstance(body, dict) and "ops" in body and "type" not in body)
        if single:
            raw_ops = [body]
            check("Op", body)
        else:
            if set(body) != {"ops"} or not isinstance(body["ops"], list) or not body["ops"]:
                raise ValidationError('a batch is {"ops": [op, ...]} with at least one op',
                                      field="ops")
            raw_ops = body["ops"]
            common = ctx.engine.common_shapes(raw_ops, req.context.actor)
            for index, op in enumerate(raw_ops):
                if not common[index]:
                    check("Op", op, where=f"op {index}: ")
        actor = req.context.actor
        dry_run = flag_param(req, "dry_run")
        if ctx.committer is not None and not dry_run:
            acks = ctx.committer.apply(raw_ops, actor)
        else:
            acks = ctx.engine.apply(raw_ops, actor, dry_run=dry_run)
        core = ctx.engine.core
        answers = [ack.to_dict(core) for ack in acks]
        if dry_run:
            for answer in answers:
                answer["dry_run"] = True
        write_body(req, resp, answers[0] if single else {"ops": answers})

    def on_get(self, req, resp):
        ctx = self.ctx
        after = int_param(req, "after", 0, 0, 2 ** 63)
        limit = int_param(req, "limit", 100, 1, 10_000)
        ops = ctx.engine.log(start=after + 1, reverse=False, limit=limit,
                             reader=req.context.actor)
        entries = [ctx.engine.op_dict(op) for op in ops]
        write_body(req, resp, {"ops": entries,
                               "next": entries[-1]["seq"] if entries else after})

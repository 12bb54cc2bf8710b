"""The REST resources: each parses, calls the engine once with the caller as its actor (the
engine checks the access rules), and formats."""

from __future__ import annotations

from dataclasses import dataclass

from conflux.api.bodies import check
from conflux.api.media import BodyBudget, parse_body, read_body, read_bytes, write_body
from conflux.errors import InputError, ValidationError


@dataclass
class Context:
    engine: object
    access: object
    committer: object
    body_limit: int
    bodies: BodyBudget


def _env(req, engine) -> str:
    env = req.get_param("env")
    if env is None:  # "?env=" names no environment: 404, not the base
        env = engine.schema.base_env
    engine.schema.env_chain(env)  # 404 for an unknown environment
    return env


def _or(value, default):
    """A query parameter's value, ``default`` only when it is absent (an empty value names
    nothing and is refused downstream, not taken for the default)."""
    return default if value is None else value


def _flag(req, name: str) -> bool:
    value = req.get_param(name)
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise InputError(f"{name} must be true or false, got {value!r}", field=name)


def _int_param(req, name: str, default: int, low: int, high: int) -> int:
    value = req.get_param(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise InputError(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(value)


class Health:
    auth = False

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        engine = self.ctx.engine
        write_body(req, resp, {"status": "ok", "core": engine.core.IMPLEMENTATION})


class OpenApi:
    auth = False

    def __init__(self, document):
        self.document = document

    def on_get(self, req, resp):
        write_body(req, resp, self.document)


class Ops:
    """``POST /v1/ops``: one op or ``{"ops": [...]}``, atomic; ``GET``: the log by sequence."""

    def __init__(self, ctx):
        self.ctx = ctx

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
        dry_run = _flag(req, "dry_run")
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
        after = _int_param(req, "after", 0, 0, 2 ** 63)
        limit = _int_param(req, "limit", 100, 1, 10_000)
        ops = ctx.engine.log(start=after + 1, reverse=False, limit=limit,
                             reader=req.context.actor)
        entries = [ctx.engine.op_dict(op) for op in ops]
        write_body(req, resp, {"ops": entries,
                               "next": entries[-1]["seq"] if entries else after})


class State:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        ctx = self.ctx
        env = _env(req, ctx.engine)
        write_body(req, resp, {"env": env, "entities": ctx.engine.state(
            env, reader=req.context.actor)})


def _fields(engine, fields) -> dict:
    core = engine.core
    return {name: {**item, "hlc": core.hlc_format(item["hlc"]) if item.get("hlc") else None}
            for name, item in fields.items()}


class _EntityView:
    """``GET /v1/<noun>/{id}``: one entity's fields as ``engine.<noun>`` reads them."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp, entity_id):
        ctx = self.ctx
        env = _env(req, ctx.engine)
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


class Status:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        from conflux.status import project_status

        status = project_status(self.ctx.engine, reader=req.context.actor)
        status["violation_list"] = self.ctx.engine.violations()
        status.pop("directory", None)  # a server path is not the client's business
        write_body(req, resp, status)


class Promote:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        ctx = self.ctx
        body = read_body(req, ctx.body_limit)
        check("Promote", body)
        entities = body.get("entities")
        ack = ctx.engine.promote(body["from"], body["to"], entities or None, req.context.actor,
                                 intent=body.get("intent") or "",
                                 dry_run=bool(body.get("dry_run")))
        write_body(req, resp, ack.to_dict(ctx.engine.core))


class Conflicts:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        ctx = self.ctx
        env = req.get_param("env")
        if env is not None:
            ctx.engine.schema.env_chain(env)
        core = ctx.engine.core
        found = [c | {"candidates": [x | {"hlc": core.hlc_format(x["hlc"])}
                                     for x in c["candidates"]]}
                 for c in ctx.engine.conflicts(env, reader=req.context.actor)]
        write_body(req, resp, {"conflicts": found})


class Resolve:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_post(self, req, resp):
        ctx = self.ctx
        body = read_body(req, ctx.body_limit)
        check("Resolve", body)
        ack = ctx.engine.resolve(body["entity_id"], body["field"], body["value"],
                                 req.context.actor, env=body.get("env"),
                                 intent=body.get("intent") or "")
        write_body(req, resp, ack.to_dict(ctx.engine.core))


def _milestones(ctx):
    from conflux.milestones import Milestones

    return Milestones(ctx.engine)  # per request: a git repository handle is not thread-safe


class MilestoneList:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        ctx = self.ctx
        found = _milestones(ctx).list(reader=req.context.actor)
        write_body(req, resp, {"milestones": [m.to_dict(ctx.engine.core)
                                              for m in reversed(found)]})

    def on_post(self, req, resp):
        ctx = self.ctx
        body = read_body(req, ctx.body_limit)
        check("MilestoneCreate", body)
        envs = body.get("envs" if "envs" in body else "environments")
        milestones = _milestones(ctx)
        m = milestones.create(body["message"], envs=envs, force=body.get("force", False),
                              actor=req.context.actor)
        out = m.to_dict(ctx.engine.core)
        if body.get("push"):
            out["pushed"] = milestones.push()
        write_body(req, resp, out, 201)


class MilestoneItem:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp, milestone_id):
        ctx = self.ctx
        m = _milestones(ctx).get(milestone_id, reader=req.context.actor)
        write_body(req, resp, m.to_dict(ctx.engine.core))


class Diff:
    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        ctx = self.ctx
        env = _env(req, ctx.engine)
        milestones = _milestones(ctx)
        m = milestones.get(_or(req.get_param("milestone"), "latest"), reader=req.context.actor,
                           env=env)
        write_body(req, resp, {"milestone": m.id, "commit": m.commit, "env": env,
                               "changes": milestones.diff(m.id, env)})


class AuditExport:
    """The op log as JSON Lines, streamed (``conflux.audit``); the ``admin`` action."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp):
        from conflux.audit import export_lines

        ctx = self.ctx
        lines = export_lines(ctx.engine, since=req.get_param("since"),
                             until=req.get_param("until"), reader=req.context.actor)
        resp.content_type = "application/x-ndjson"
        resp.stream = lines

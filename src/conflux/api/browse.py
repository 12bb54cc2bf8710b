"""What people browsing a project read (the web console's data, any client's too):
``GET /v1/entities`` (a filtered page of entity ids), ``GET /v1/schema`` (types, fields,
strategies, environments), ``GET /v1/violations`` and ``GET /v1/history/{entity_id}`` (an
entity's operations with actor, intent, time, signature and the values before and after)."""

from __future__ import annotations

from conflux.api.media import write_body
from conflux.api.params import env_param, int_param, Resource
from conflux.errors import InputError


class EntityList(Resource):
    """``GET /v1/entities?env=&type=&q=&offset=&limit=``: ids in order, a page at a time."""

    async def on_get(self, req, resp):
        ctx = self.ctx
        env = env_param(req, ctx.engine)
        listed = req.get_param("type")
        types = [t for t in listed.split(",") if t] if listed is not None else None
        match = req.get_param("q")
        if match is not None and len(match) > 200:
            raise InputError("q is at most 200 characters", field="q")
        offset = int_param(req, "offset", 0, 0, 10_000_000)
        limit = int_param(req, "limit", 100, 1, 1000)
        page = await ctx.blocking(ctx.engine.entity_page, env, types=types, match=match,
                                  offset=offset, limit=limit, reader=req.context.actor)
        write_body(req, resp, page)


class Schema(Resource):
    """``GET /v1/schema``: what the project's schema declares."""

    async def on_get(self, req, resp):
        schema = self.ctx.engine.schema
        types = {}
        for name, etype in schema.types.items():
            fields = {}
            for fname, spec in etype.fields.items():
                item = {"type": spec.type, "merge": spec.merge}
                for key in ("default", "min", "max", "one_of", "required", "description"):
                    value = getattr(spec, key, None)
                    if value not in (None, False, ""):
                        item[key] = value
                if spec.pattern is not None:
                    item["pattern"] = spec.pattern.pattern
                fields[fname] = item
            types[name] = {"fields": fields, "children": dict(etype.children),
                           "description": etype.description}
        write_body(req, resp, {"name": schema.name, "version": schema.version,
                               "base": schema.base_env, "environments": schema.environments,
                               "inherits": {e: p for e, p in schema.parents.items() if p},
                               "types": types})


class Violations(Resource):
    """``GET /v1/violations?env=&entity=``: what breaks the schema, per environment."""

    async def on_get(self, req, resp):
        ctx = self.ctx
        env = req.get_param("env")
        if env is not None:
            ctx.engine.schema.env_chain(env)
        found = await ctx.blocking(ctx.engine.violations, env, entity=req.get_param("entity"),
                                   reader=req.context.actor)
        write_body(req, resp, {"violations": found})


class History(Resource):
    """``GET /v1/history/{entity_id}?field=&actor=&env=&since=&limit=``: the entity's
    operations, newest first, each with its actor and class, intent, HLC, signature (the
    key that signed it: signatures are verified before an operation is accepted), and the
    value before (``previous``) and after."""

    async def on_get(self, req, resp, entity_id):
        ctx = self.ctx
        ctx.engine.schema.split_entity_id(entity_id)
        env = req.get_param("env")
        if env is not None:
            ctx.engine.schema.env_chain(env)
        limit = int_param(req, "limit", 200, 1, 10_000)
        await ctx.blocking(self._history, req, resp, entity_id, env, limit)

    def _history(self, req, resp, entity_id, env, limit):
        engine = self.ctx.engine
        field, actor = req.get_param("field"), req.get_param("actor")
        if field is not None:
            engine.schema.field(entity_id.partition(".")[0], field)
        # (filtered here, so the limit counts what is kept)
        ops = engine.log(limit=None if field or env else limit, entity=entity_id,
                         actor=actor or None,
                         since=req.get_param("since"), reader=req.context.actor)
        out = []
        for op in ops:
            for part in op.children or (op,):
                if part.entity != entity_id or (field and part.field != field) or \
                        (env and part.env != env):
                    continue
                part.seq = op.seq
                item = engine.op_dict(part)
                item["intent"] = op.intent
                item["signed"] = op.signature is not None
                item["text"] = engine.describe(part)
                out.append(item)
            if len(out) >= limit:
                break
        write_body(req, resp, {"entity_id": entity_id, "operations": out[:limit]})

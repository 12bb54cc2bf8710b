"""Milestones: ``GET``/``POST /v1/milestones``, ``GET /v1/milestones/{id}``, ``POST
/v1/milestones/{id}/rollback`` (``conflux.rollback``) and ``GET /v1/diff`` (the state
against a milestone)."""

from __future__ import annotations

from conflux.api.bodies import check
from conflux.api.media import read_body, write_body
from conflux.api.params import env_param, or_default, Resource


def _milestones(ctx):
    from conflux.milestones import Milestones

    return Milestones(ctx.engine)  # per request: a git repository handle is not thread-safe


# Milestones are git's work (pygit2): each request's runs in one of the worker's threads.


class MilestoneList(Resource):
    async def on_get(self, req, resp):
        await self.ctx.blocking(self._list, req, resp)

    def _list(self, req, resp):
        ctx = self.ctx
        found = _milestones(ctx).list(reader=req.context.actor)
        write_body(req, resp, {"milestones": [m.to_dict(ctx.engine.core)
                                              for m in reversed(found)]})

    async def on_post(self, req, resp):
        body = await read_body(req, self.ctx.bodies, self.ctx.body_limit)
        await self.ctx.blocking(self._create, req, resp, body)

    def _create(self, req, resp, body):
        ctx = self.ctx
        check("MilestoneCreate", body)
        envs = body.get("envs" if "envs" in body else "environments")
        milestones = _milestones(ctx)
        m = milestones.create(body["message"], envs=envs, force=body.get("force", False),
                              actor=req.context.actor)
        out = m.to_dict(ctx.engine.core)
        if body.get("push"):
            out["pushed"] = milestones.push()
        write_body(req, resp, out, 201)


class MilestoneItem(Resource):
    async def on_get(self, req, resp, milestone_id):
        await self.ctx.blocking(self._get, req, resp, milestone_id)

    def _get(self, req, resp, milestone_id):
        ctx = self.ctx
        m = _milestones(ctx).get(milestone_id, reader=req.context.actor)
        write_body(req, resp, m.to_dict(ctx.engine.core))


class Diff(Resource):
    async def on_get(self, req, resp):
        await self.ctx.blocking(self._diff, req, resp)

    def _diff(self, req, resp):
        ctx = self.ctx
        env = env_param(req, ctx.engine)
        milestones = _milestones(ctx)
        m = milestones.get(or_default(req.get_param("milestone"), "latest"), reader=req.context.actor,
                           env=env)
        to = req.get_param("to")
        write_body(req, resp, {"milestone": m.id, "commit": m.commit, "env": env,
                               "to": to or "now",
                               "changes": milestones.diff(m.id, env, to=to)})


class Rollback(Resource):
    """``POST /v1/milestones/{id}/rollback``: ``{"env", "entities", "dry_run"}``; answers the
    plan (``changes``, ``skipped``) and, unless a dry run, what was written."""

    async def on_post(self, req, resp, milestone_id):
        body = await read_body(req, self.ctx.bodies, self.ctx.body_limit)
        await self.ctx.blocking(self._rollback, req, resp, milestone_id, body)

    def _rollback(self, req, resp, milestone_id, body):
        from conflux import rollback

        ctx = self.ctx
        check("Rollback", body)
        dry_run = body.get("dry_run", False)
        done = rollback.run(ctx.engine, _milestones(ctx), milestone_id, req.context.actor,
                            env=body.get("env"), entities=body.get("entities"),
                            dry_run=dry_run)
        core = ctx.engine.core
        write_body(req, resp, {
            "milestone": done["milestone"], "env": done["env"], "changes": done["changes"],
            "skipped": done["skipped"], "dry_run": dry_run,
            "written": 0 if dry_run else len(done["ops"]), "remaining": done["remaining"],
            "acks": [] if dry_run else [a.to_dict(core) for a in done["acks"]]})

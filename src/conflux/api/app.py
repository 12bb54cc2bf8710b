"""``create_app``: the Falcon application of the daemon (ASGI), wired once per worker process."""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor

import falcon
import falcon.asgi

from conflux.api import (audit, browse, console, entities, milestones, ops, original, review,
                         service, watch, webhooks)
from conflux.api.params import Context
from conflux.api.bodies import check_value
from conflux.api.media import BodyBudget, write_body
from conflux.api.openapi import openapi_document
from conflux.errors import ConfluxError, InputError

log = logging.getLogger("conflux.api")

#: Bodies larger than this are refused with 413 (a 10,000-op JSON batch is about 1.5 MB).
DEFAULT_BODY_LIMIT = 16 << 20


def slow_work_pool(threads: int) -> ThreadPoolExecutor:
    """A worker's threads for slow work (``Context.blocking``), shared by its app and its
    commit client."""
    return ThreadPoolExecutor(threads, thread_name_prefix="conflux-slow")


def create_app(engine, access, *, committer=None, pool: ThreadPoolExecutor | None = None,
               body_limit: int = DEFAULT_BODY_LIMIT, watch_poll_s: float = 0.05,
               ui: bool = True
               ) -> falcon.asgi.App:
    """The REST API over one opened ``Engine``, as an ASGI application.

    ``access`` authenticates requests (``conflux.api.access``; the engine authorizes);
    ``committer`` shares synced commits among concurrent requests (the daemon's
    ``CommitClient``); with none, the app's own ``LocalCommitter`` groups them.
    ``pool``: the threads beside the event loop where slow work runs (git, a whole
    environment, an export, a big body); by default 8 of the app's own.
    """
    from conflux.daemon.commits import LocalCommitter

    document = openapi_document(engine.schema)
    # parameters are held to the generic document: an environment or entity the project
    # does not have is then 404, as the routes answer it, not a 400 from the enumeration
    app = falcon.asgi.App(middleware=[_KnownParameters(openapi_document()),
                                      access.middleware()], cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = True
    pool = pool or slow_work_pool(8)
    # a worker parses at most two largest bodies' worth of batches at once (see BodyBudget)
    ctx = Context(engine=engine, committer=committer or LocalCommitter(engine, pool),
                  body_limit=body_limit, bodies=BodyBudget(2 * body_limit), pool=pool)
    routes = {
        "/v1/health": service.Health(ctx),
        "/v1/openapi.json": service.OpenApi(document),
        "/v1/ops": ops.Ops(ctx),
        "/v1/ops/batch": ops.OriginalBatch(ctx),
        "/v1/state": entities.State(ctx),
        "/v1/entities/{entity_id}": entities.Entity(ctx),
        "/v1/blame/{entity_id}": entities.Blame(ctx),
        "/v1/tree": entities.Tree(ctx),
        "/v1/entities": browse.EntityList(ctx),
        "/v1/schema": browse.Schema(ctx),
        "/v1/violations": browse.Violations(ctx),
        "/v1/history/{entity_id}": browse.History(ctx),
        "/v1/status": service.Status(ctx),
        "/v1/promote": review.Promote(ctx),
        "/v1/conflicts": review.Conflicts(ctx),
        "/v1/conflicts/resolve": review.Resolve(ctx),
        "/v1/milestones": milestones.MilestoneList(ctx),
        "/v1/milestones/{milestone_id}": milestones.MilestoneItem(ctx),
        "/v1/milestones/{milestone_id}/rollback": milestones.Rollback(ctx),
        "/v1/diff": milestones.Diff(ctx),
        "/v1/audit/export": audit.AuditExport(ctx),
        "/v1/watch": watch.Watch(ctx, poll_s=watch_poll_s),
        # the original Conflux's routes (conflux.api.original)
        "/health": original.Health(ctx),
        "/v1/state/{entity_path}": original.EntityState(ctx),
        "/v1/log": original.Log(ctx),
        "/v1/log/{entity_path}": original.Log(ctx),
        "/v1/envs": original.Envs(ctx),
        "/v1/envs/diff": original.EnvDiff(ctx),
        "/v1/envs/{env_name}/state": original.EnvState(ctx),
        "/v1/webhooks": webhooks.Webhooks(ctx),
        "/v1/webhooks/{webhook_id}": webhooks.WebhookItem(ctx),
    }
    if ui:  # the web console: static files, reading and writing through the routes above
        routes["/ui"] = routes["/ui/{name}"] = console.Console()
    for path, resource in routes.items():
        app.add_route(path, resource)
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(ConfluxError, _ConfluxErrors(engine.root).handle)
    app.set_error_serializer(_write_http_error)
    return app


class _ConfluxErrors:
    """Conflux's errors as JSON answers, without the server's paths: where the project, its
    store or its rules live is the server's business. Messages keep their paths in the
    daemon's log (always, for the server's own failures, 5xx)."""

    def __init__(self, root: str):
        project = os.path.dirname(os.path.abspath(root))
        self.projects = sorted({project, os.path.realpath(project)}, key=len, reverse=True)

    async def handle(self, req, resp, exc, params):
        body = exc.to_dict()
        message = body["error"]["message"]
        public = self.public(message, server=exc.http_status >= 500)
        if exc.http_status >= 500:
            log.error("%s %s: %s", req.method, req.path, message)
        elif public != message:
            log.info("%s %s: %s", req.method, req.path, message)
        body["error"]["message"] = public
        write_body(req, resp, body, exc.http_status)

    def public(self, message: str, *, server: bool) -> str:
        for project in self.projects:
            message = message.replace(project + os.sep, "").replace(project, "the project")
        if server:
            # the server's own failure: no client value is quoted, so any absolute path of
            # this machine (a milestone repository, a remote) is cut to its last part
            message = _ABSOLUTE_PATH.sub(_last_part, message)
        return message


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/[^\s'\"()<>,;]+")


def _last_part(found) -> str:
    path = found[0].rstrip(".:")
    tail = found[0][len(path):]
    if os.path.exists(path) or os.path.exists(os.path.dirname(path)):
        return os.path.basename(path.rstrip("/")) + tail
    return found[0]


class _KnownParameters:
    """Refuse a query parameter the document does not list for the route (400): a typo such
    as ``?envv=staging`` would otherwise be ignored, and the answer be about the base."""

    def __init__(self, document):
        self.allowed = {(path, method.upper()): {
            p["name"]: p["schema"] for p in op.get("parameters", ()) if p["in"] == "query"}
            for path, item in document["paths"].items() for method, op in item.items()}

    async def process_resource(self, req, resp, resource, params):
        if not req.query_string:  # PERF: most requests have none
            return
        allowed = self.allowed.get((req.uri_template, req.method))
        if allowed is None:
            return
        unknown = sorted(set(req.params) - set(allowed))
        if unknown:
            listed = ", ".join(sorted(allowed)) or "none"
            raise InputError(f"unknown query parameter {unknown[0][:60]!r} (this route takes: "
                             f"{listed})", field=unknown[0][:60])
        for name, schema in allowed.items():
            value = req.params.get(name)
            if isinstance(value, list):
                raise InputError(f"query parameter {name!r} is given more than once",
                                 field=name)
            # text parameters are held to their documented pattern or values here; numbers
            # and flags are parsed (and range-checked) where they are read
            if value is not None and schema.get("type") == "string":
                check_value(schema, value, name)


async def _http_error(req, resp, exc, params):
    _write_http_error(req, resp, exc)


def _write_http_error(req, resp, exc):
    code = (exc.title or "error").lower().replace(" ", "_")
    body = {"error": {"code": code, "message": exc.description or exc.title}}
    write_body(req, resp, body, exc.status_code)
    for name, value in (exc.headers or {}).items():
        resp.set_header(name, value)


async def _unexpected(req, resp, exc, params):
    # Nothing a client sends should land here; if it does, say so without leaking internals.
    log.exception("unexpected error on %s %s", req.method, req.path)
    write_body(req, resp, {"error": {"code": "internal",
                                     "message": "internal error (logged by the daemon)"}}, 500)

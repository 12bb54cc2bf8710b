"""The OpenAPI 3 document served at ``/v1/openapi.json``: exactly the routes ``create_app``
serves (a test compares the two), with the request bodies of ``conflux.api.bodies``, the
schemas every body is checked against.

``openapi_document()`` is the form any project serves (docs/rest.md is generated from it);
``openapi_document(schema)``, what a daemon serves, names that project's environments, entity
types, fields and value types, so that a client generated from it sends what the daemon takes.
"""

from __future__ import annotations

import re

from conflux import __version__
from conflux.api.bodies import ENTITY_ID, ENV_NAME, OP_TYPES, body_schemas

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes):
    return {str(c): {"description": _REASONS[c],
                     "content": {"application/json": {"schema": _ERROR},
                                 "application/msgpack": {"schema": _ERROR}}} for c in codes}


_REASONS = {400: "malformed request", 401: "no or bad credentials", 403: "denied by RBAC",
            404: "no such entity, environment, operation or milestone",
            409: "the state makes it pointless or unsafe: a base that no longer matches, an op "
                 "id that already names another operation, nothing to promote, no conflict to "
                 "resolve, nothing to commit or schema violations (milestones)",
            408: "the body did not arrive in time (30 s after the request's head)",
            413: "body over the limit", 415: "unsupported content type",
            422: "the schema refused the value (its type, or its field's constraints)",
            503: "busy with other large bodies, or the store unavailable: retry"}


def _ok(schema, description="OK"):
    return {"200": {"description": description,
                    "content": {"application/json": {"schema": schema},
                                "application/msgpack": {"schema": schema}}}}


def _body(schema):
    return {"required": True,
            "content": {"application/json": {"schema": schema},
                        "application/msgpack": {"schema": schema}}}


_SECURITY = [{"apiKey": []}]
#: A point in the log: a sequence number, an hlc, or an ISO 8601 date or date and time.
_POINT = {"type": "string", "pattern": (
    r"^([0-9]{1,18}|hlc:[0-9]{1,14}\.[0-9]{1,5}|[1-9][0-9]{3}-(0[1-9]|1[0-2])-"
    r"(0[1-9]|1[0-9]|2[0-8])(T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?"
    r"(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])?)?)$")}
#: A milestone: its number, 'latest', or its commit id or a prefix of it (7 hex digits on);
#: any other text names no milestone (404), so no pattern refuses it first.
_MILESTONE_REF = {"type": "string", "description": "a milestone's number, 'latest', or its "
                                                   "commit id (or 7 hex digits or more of it)"}


def openapi_document(schema=None) -> dict:
    """The document; refined by a project's ``Schema`` when given (see the module's doc)."""
    bodies = body_schemas(schema)
    if schema is None:
        env_schema = {"type": "string", "pattern": ENV_NAME}
        entity_schema = {"type": "string", "pattern": ENTITY_ID, "maxLength": 265}
        one_type = "[A-Za-z][A-Za-z0-9_-]*"
    else:
        env_schema = {"type": "string", "enum": list(schema.environments)}
        entity_schema = bodies["Promote"]["properties"]["entities"]["items"]
        one_type = "(" + "|".join(re.escape(t) for t in schema.types) + ")"
    types_schema = {"type": "string", "maxLength": 300,
                    "pattern": f"^{one_type}(,{one_type})*$"}
    env_param = {"name": "env", "in": "query", "required": False, "schema": env_schema,
                 "description": "environment (default: the base)"}
    entity_param = {"name": "entity_id", "in": "path", "required": True,
                    "schema": entity_schema, "description": "entity id, e.g. route.api-v1"}
    ack = {"type": "object", "required": ["op_id", "hlc", "seq"],
           "properties": {"op_id": {"type": "string"}, "hlc": {"type": "string"},
                          "seq": {"type": "integer"}, "duplicate": {"type": "boolean"},
                          "dry_run": {"type": "boolean"}, "change": {"type": "object"},
                          "applied": {"type": "boolean", "description":
                                      "whether the op's write is what its field shows after "
                                      "the commit (false: the merge kept another value); in "
                                      "answers to requests of at most 64 ops"},
                          "value": {"description": "with applied: the field's resolved value "
                                                   "in the op's environment after the commit "
                                                   "(null: none)"},
                          "operation_id": {"type": "string",
                                           "description": "the original's name of op_id"},
                          "timestamp": {"type": "string",
                                        "description": "the original's name of hlc"},
                          "conflict": {"type": "boolean", "description":
                                       "a review field now holds concurrent candidates"},
                          "conflict_info": {
                              "type": "object", "required": ["entity_id", "field",
                                                             "contending_values"],
                              "properties": {"entity_id": {"type": "string"},
                                             "field": {"type": "string"},
                                             "contending_values": {"type": "array"}}},
                          "operation_ids": {"type": "array", "items": {"type": "string"},
                                            "description": "every operation an op of the "
                                                           "original's became (an insert: "
                                                           "one per field)"}}}
    fields = {"type": "object", "additionalProperties": {"type": "object"}}
    entity_view = {"type": "object", "required": ["entity_id", "env", "fields"],
                   "properties": {"entity_id": {"type": "string"}, "env": {"type": "string"},
                                  "fields": fields}}
    text, count = {"type": "string"}, {"type": "integer", "minimum": 0}
    log_entry = {"type": "object",
                 "required": ["seq", "op_id", "type", "env", "entity_id", "field", "actor",
                              "actor_class", "intent", "hlc", "override"],
                 "properties": {"seq": count, "op_id": text,
                                "type": {"type": "string",
                                         "enum": [*OP_TYPES, "promote"]},
                                "env": text, "entity_id": {"type": "string", "nullable": True},
                                "field": {"type": "string", "nullable": True},
                                "actor": text, "actor_class": text, "intent": text,
                                "hlc": text, "override": {"type": "boolean"},
                                "value": {"description": "set_field, resolve: the value"},
                                "elements": {"type": "array"},
                                "previous": {"description": "the value it replaced"},
                                "base": {"type": "array", "items": text},
                                "signature": text, "key_id": text,
                                "operations": {"type": "array",
                                               "items": {"$ref": "#/components/schemas/"
                                                                 "LogEntry"},
                                               "description": "a promotion's operations"}}}
    watch_event = {
        "type": "object", "required": ["id", "event", "data"],
        "description": "one server-sent event: the lines 'id: <id>', 'event: op' and "
                       "'data: <data as one line of JSON>', then a blank line. Lines starting "
                       "with ':' are comments (a greeting, keepalives every 15 s).",
        "properties": {"id": {"type": "integer", "minimum": 1,
                              "description": "the operation's sequence number: send it back "
                                             "as Last-Event-ID to resume after it"},
                       "event": {"type": "string", "enum": ["op"]},
                       "data": {"$ref": "#/components/schemas/LogEntry"}}}
    milestone = {"type": "object", "required": ["id", "commit", "seq", "operations", "title"],
                 "properties": {"id": {"type": "integer"}, "commit": {"type": "string"},
                                "seq": {"type": "integer"}, "first_seq": {"type": "integer"},
                                "operations": {"type": "integer"},
                                "envs": {"type": "array", "items": {"type": "string"}},
                                "title": {"type": "string"}, "message": {"type": "string"}}}
    paths = {
        "/v1/health": {"get": {"summary": "liveness", "security": [],
                               "responses": _ok({"type": "object", "required": ["status"]})}},
        "/v1/openapi.json": {"get": {"summary": "this document", "security": [],
                                     "responses": _ok({"type": "object"})}},
        "/v1/ops": {
            "post": {"summary": "submit one operation or an atomic batch",
                     "parameters": [{"name": "dry_run", "in": "query", "required": False,
                                     "schema": {"type": "boolean"}}],
                     "requestBody": _body({"oneOf": [
                         {"$ref": "#/components/schemas/Op"},
                         {"$ref": "#/components/schemas/OriginalOp"},
                         {"$ref": "#/components/schemas/OpBatch"}]}),
                     "responses": {**_ok({"oneOf": [
                         {"$ref": "#/components/schemas/Ack"},
                         {"type": "object", "required": ["ops"],
                          "properties": {"ops": {"type": "array", "items": {
                              "$ref": "#/components/schemas/Ack"}}}}]}),
                         **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 503)}},
            "get": {"summary": "the op log, oldest first, by sequence number",
                    "parameters": [
                        {"name": "after", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 0}},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 10000}}],
                    "responses": {**_ok({"type": "object", "required": ["ops", "next"],
                                         "properties": {"ops": {"type": "array",
                                                                "items": {"$ref": "#/components/schemas/LogEntry"}},
                                                        "next": {"type": "integer"}}}),
                                  **_errors(400, 401, 403)}}},
        "/v1/ops/batch": {"post": {
            "summary": "the original Conflux's batch: its operations (or Conflux's), applied "
                       "atomically",
            "requestBody": _body({"$ref": "#/components/schemas/OriginalBatch"}),
            "responses": {**_ok({"type": "object", "required": ["results", "total",
                                                                "conflicts"],
                                 "properties": {"results": {"type": "array", "items": {
                                     "$ref": "#/components/schemas/Ack"}},
                                     "total": count, "conflicts": count}}),
                          **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 503)}}},
        "/v1/state": {"get": {"summary": "resolved state of an environment",
                              "parameters": [env_param],
                              "responses": {**_ok({"type": "object",
                                                   "required": ["env", "entities"]}),
                                            **_errors(400, 401, 404)}}},
        "/v1/entities/{entity_id}": {"get": {
            "summary": "an entity's resolved fields", "parameters": [entity_param, env_param],
            "responses": {**_ok(entity_view), **_errors(400, 401, 403, 404, 422)}}},
        "/v1/blame/{entity_id}": {"get": {
            "summary": "per field, the operation that set it", "parameters": [entity_param, env_param],
            "responses": {**_ok(entity_view), **_errors(400, 401, 403, 404, 422)}}},
        "/v1/status": {"get": {"summary": "project status: op counts, conflicts and violations "
                                          "of the whole store (read on every entity in every "
                                          "environment)",
                               "responses": {**_ok({"type": "object", "required": [
                                   "operations", "conflicts", "violations",
                                   "violation_list"]}), **_errors(401, 403)}}},
        "/v1/promote": {"post": {
            "summary": "copy resolved values to another environment as one operation",
            "requestBody": _body({"$ref": "#/components/schemas/Promote"}),
            "responses": {**_ok({"$ref": "#/components/schemas/Ack"}),
                          **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422)}}},
        "/ui": {"get": {
            "summary": "the web console (docs/console.md): its page; no credentials needed "
                       "for its files, every piece of data is a call that needs them",
            "security": [],
            "responses": {"200": {"description": "the console's page", "content": {
                "text/html": {"schema": {"type": "string"}}}}}}},
        "/ui/{name}": {"get": {
            "summary": "the web console's files",
            "security": [],
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string", "maxLength": 100}}],
            "responses": {"200": {"description": "a file of the console", "content": {
                "text/html": {"schema": {"type": "string"}},
                "text/javascript": {"schema": {"type": "string"}},
                "text/css": {"schema": {"type": "string"}}}},
                **_errors(404)}}},
        "/v1/entities": {"get": {
            "summary": "a page of an environment's entity ids, in order (server-side filter "
                       "and paging)",
            "parameters": [env_param,
                           {"name": "type", "in": "query", "schema": types_schema,
                            "description": "entity types, comma-separated"},
                           {"name": "q", "in": "query", "schema": {"type": "string",
                                                                   "maxLength": 200},
                            "description": "ids containing this text (any case)"},
                           {"name": "offset", "in": "query", "schema": {
                               "type": "integer", "minimum": 0, "maximum": 10_000_000}},
                           {"name": "limit", "in": "query", "schema": {
                               "type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {**_ok({"type": "object", "required": ["env", "entities", "matched"],
                                 "properties": {
                                     "env": {"type": "string"},
                                     "entities": {"type": "array", "items": {"type": "string"}},
                                     "offset": {"type": "integer"}, "limit": {"type": "integer"},
                                     "matched": {"type": "integer", "description": "ids that "
                                                 "match, deleted entities included"},
                                     "next": {"type": "integer", "nullable": True,
                                              "description": "the offset of the next page"}}}),
                          **_errors(400, 401, 403, 404, 422)}}},
        "/v1/schema": {"get": {
            "summary": "the schema: environments, entity types, fields and their strategies",
            "responses": {**_ok({"type": "object", "required": ["name", "base", "types"]}),
                          **_errors(401)}}},
        "/v1/violations": {"get": {
            "summary": "what breaks the schema, per environment and field",
            "parameters": [{**env_param, "description": "one environment (default: all)"},
                           {"name": "entity", "in": "query", "schema": entity_schema}],
            "responses": {**_ok({"type": "object", "required": ["violations"]}),
                          **_errors(400, 401, 404)}}},
        "/v1/history/{entity_id}": {"get": {
            "summary": "an entity's operations, newest first: actor, intent, hlc, "
                       "signature, the value before and after",
            "parameters": [entity_param, {**env_param, "description": "one environment"},
                           {"name": "field", "in": "query",
                            "schema": {"type": "string", "maxLength": 64}},
                           {"name": "actor", "in": "query",
                            "schema": {"type": "string", "maxLength": 300},
                            "description": "id or class:id"},
                           {"name": "since", "in": "query",
                            "schema": {"type": "string", "maxLength": 64},
                            "description": "a sequence number, an hlc or an ISO date"},
                           {"name": "limit", "in": "query", "schema": {
                               "type": "integer", "minimum": 1, "maximum": 10_000}}],
            "responses": {**_ok({"type": "object", "required": ["entity_id", "operations"]}),
                          **_errors(400, 401, 403, 404, 422)}}},
        "/v1/tree": {"get": {
            "summary": "the entity tree as an environment shows it (docs/concepts.md, the "
                       "entity tree); with entity, that entity's place",
            "parameters": [env_param, {"name": "entity", "in": "query",
                                       "schema": entity_schema,
                                       "description": "one entity: its parent, position "
                                                      "and children"}],
            "responses": {**_ok({"type": "object", "required": ["env"], "properties": {
                "env": {"type": "string"}, "roots": {"type": "array",
                                                     "items": {"type": "string"}},
                "entities": {"type": "object", "description": "{entity id: {parent, "
                                                              "position, children}}"},
                "entity_id": {"type": "string"}, "parent": {"type": "string",
                                                            "nullable": True},
                "position": {"nullable": True}, "children": {
                    "type": "array", "items": {"type": "string"}}}}),
                **_errors(400, 401, 403, 404, 422)}}},
        "/v1/conflicts": {"get": {"summary": "review-field conflicts", "parameters": [env_param],
                                  "responses": {**_ok({"type": "object",
                                                       "required": ["conflicts"]}),
                                                **_errors(400, 401, 404)}}},
        "/v1/conflicts/resolve": {"post": {
            "summary": "settle a review conflict",
            "requestBody": _body({"$ref": "#/components/schemas/Resolve"}),
            "responses": {**_ok({"$ref": "#/components/schemas/Ack"}),
                          **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422)}}},
        "/v1/milestones": {
            "get": {"summary": "milestones, newest first",
                    "responses": {**_ok({"type": "object", "required": ["milestones"],
                                         "properties": {"milestones": {
                                             "type": "array", "items": milestone}}}),
                                  **_errors(401, 403)}},
            "post": {"summary": "commit the resolved state to git as the next milestone",
                     "requestBody": _body({"$ref": "#/components/schemas/MilestoneCreate"}),
                     "responses": {"201": {"description": "the milestone",
                                           "content": {"application/json": {"schema": milestone},
                                                       "application/msgpack": {
                                                           "schema": milestone}}},
                                   **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422)}}},
        "/v1/milestones/{milestone_id}": {"get": {
            "summary": "one milestone, by number or commit id ('latest' for the newest)",
            "parameters": [{"name": "milestone_id", "in": "path", "required": True,
                            "schema": _MILESTONE_REF}],
            "responses": {**_ok(milestone), **_errors(400, 401, 403, 404)}}},
        "/v1/milestones/{milestone_id}/rollback": {"post": {
            "summary": "return an environment (or some entities) to a milestone's values, "
                       "by forward operations (intent 'rollback to milestone N'); dry_run "
                       "previews",
            "parameters": [{"name": "milestone_id", "in": "path", "required": True,
                            "schema": _MILESTONE_REF}],
            "requestBody": _body({"$ref": "#/components/schemas/Rollback"}),
            "responses": {**_ok({"type": "object", "required": [
                "milestone", "env", "changes", "skipped", "dry_run", "written"],
                "properties": {"milestone": {"type": "integer"}, "env": {"type": "string"},
                               "changes": {"type": "array", "items": {"type": "object"}},
                               "skipped": {"type": "array", "items": {"type": "object"}},
                               "dry_run": {"type": "boolean"},
                               "written": {"type": "integer"},
                               "remaining": {"type": "array", "items": {"type": "object"},
                                             "description": "what still differs from the "
                                                            "milestone once written (a "
                                                            "write that came in between)"},
                               "acks": {"type": "array", "items": {"type": "object"}}}}),
                **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422)}}},
        "/v1/diff": {"get": {
            "summary": "per entity and field: the value at a milestone and now, with the "
                       "operations in between",
            "parameters": [{"name": "milestone", "in": "query", "required": False,
                            "schema": _MILESTONE_REF,
                            "description": "number or commit id (default: the latest)"},
                           {"name": "to", "in": "query", "required": False,
                            "schema": _MILESTONE_REF,
                            "description": "a later milestone to compare with (default: "
                                           "now)"}, env_param],
            "responses": {**_ok({"type": "object", "required": ["milestone", "env", "changes"],
                                 "properties": {"milestone": {"type": "integer"},
                                                "commit": {"type": "string"},
                                                "env": {"type": "string"},
                                                "changes": {"type": "array",
                                                            "items": {"type": "object"}}}}),
                          **_errors(400, 401, 403, 404)}}},
        "/v1/audit/export": {"get": {
            "summary": "the op log as JSON Lines, one operation a line, with signatures, "
                       "hash-chained, ending with a signed checkpoint",
            "parameters": [
                {"name": "since", "in": "query", "required": False,
                 "schema": _POINT, "description": "a sequence number, hlc:... or "
                                                  "ISO date/time"},
                {"name": "until", "in": "query", "required": False, "schema": _POINT},
                {"name": "actor", "in": "query", "required": False,
                 "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                 "description": "only this actor's operations (id, or class:id)"},
                {"name": "entity", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,265}$"},
                 "description": "only operations on entities whose id starts with this"},
                {"name": "verify", "in": "query", "required": False,
                 "schema": {"type": "boolean"},
                 "description": "check every exported signature against keys.json: "
                                "X-Audit-Signature-Failures"}],
            "responses": {"200": {"description": "JSON Lines: one operation a line (with "
                                                 "actor or entity, each run of operations "
                                                 "left out as one elided line), then the "
                                                 "signed checkpoint (docs/security.md)",
                                  "headers": {
                                      "X-Audit-Operations-Exported": {
                                          "schema": {"type": "integer"},
                                          "description": "operations in the export"},
                                      "X-Audit-Signature-Failures": {
                                          "schema": {"type": "integer"},
                                          "description": "with verify: signatures that "
                                                         "do not verify"}},
                                  "content": {"application/x-ndjson": {
                                      "schema": {"type": "string"}}}},
                          **_errors(400, 401, 403, 422, 503)}}},
        "/v1/watch": {"get": {
            "summary": "changes as server-sent events; resume with Last-Event-ID",
            "parameters": [
                {"name": "entity", "in": "query", "required": False,
                 "schema": entity_schema}, env_param,
                {"name": "after", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0}},
                {"name": "timeout", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0, "maximum": 86400},
                 "description": "close the stream after this many seconds (0: never)"},
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                 "description": "the id of the last event seen: resume after it"}],
            "responses": {"200": {"description": "an event stream: WatchEvent after WatchEvent",
                                  "content": {"text/event-stream": {"schema": {
                                      "type": "array",
                                      "items": {"$ref": "#/components/schemas/WatchEvent"}}}}},
                          **_errors(400, 401, 403, 404, 422)}}},
        **_original_paths(env_param, entity_schema, env_schema),
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Conflux", "version": __version__,
                 "description": "Typed operations on infrastructure config, merged with CRDT "
                                "rules; see docs/rest.md."},
        "servers": [{"url": "/"}],
        "security": _SECURITY,
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                           "description": "or, on a daemon started with --client-ca, a TLS "
                                          "client certificate mapped to an actor (OpenAPI "
                                          "3.0 has no scheme for mutual TLS)"}},
            "schemas": {
                **bodies, "Ack": ack, "LogEntry": log_entry, "WatchEvent": watch_event,
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {
                              "type": "object", "required": ["code", "message"],
                              "properties": {"code": {"type": "string"},
                                             "message": {"type": "string"},
                                             "field": {"type": "string"}}}}}},
        },
    }


def _original_paths(env_param: dict, entity_schema: dict, env_schema: dict) -> dict:
    """The original Conflux's read routes (``conflux.api.original``), in its shapes."""
    text, count = {"type": "string"}, {"type": "integer", "minimum": 0}
    nullable = {"type": "string", "nullable": True}
    entity = {"type": "object", "required": ["entity_id", "entity_type", "fields", "parent_id",
                                             "children", "tombstoned"],
              "properties": {"entity_id": text, "entity_type": text, "env": text,
                             "fields": {"type": "object"}, "parent_id": nullable,
                             "children": {"type": "array", "items": text,
                                          "description": "in the entity tree, in sibling "
                                                         "order"},
                             "position": {"nullable": True, "description": "among its "
                                          "siblings, when it has one"},
                             "tombstoned": {"type": "boolean"},
                             "field_sources": {"type": "object", "additionalProperties": text,
                                               "description": "per field, the environment "
                                                              "its value comes from: an "
                                                              "overlay's name, 'base', or "
                                                              "'default'"}}}
    entry = {"type": "object", "required": ["id", "timestamp", "actor_id", "actor_class",
                                            "type", "seq"],
             "properties": {"id": text, "timestamp": text, "actor_id": text,
                            "actor_class": text, "intent": nullable, "type": text,
                            "seq": count, "env": text, "entity_id": nullable,
                            "field": text, "value": {}, "environment": nullable,
                            "chosen_value": {}, "elements": {"type": "array"},
                            "operations": {"type": "array"}}}
    log = {"type": "object", "required": ["operations", "total", "has_more"],
           "properties": {"operations": {"type": "array", "items": entry}, "total": count,
                          "has_more": {"type": "boolean"}}}
    paging = [{"name": "actor_id", "in": "query", "required": False,
               "schema": {"type": "string", "minLength": 1},
               "description": "one actor's operations (id, or class:id)"},
              {"name": "limit", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
              {"name": "offset", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 0, "maximum": 100000}}]
    path = {"name": "entity_path", "in": "path", "required": True, "schema": entity_schema,
            "description": "entity id, e.g. service.api"}
    hook_props = {
        "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s]+$",
                "maxLength": 2000},
        "entity_filter": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{0,265}$",
                          "nullable": True, "description": "an entity id prefix"},
        "field_filter": {"type": "string", "pattern": "^([A-Za-z_][A-Za-z0-9_]{0,63})?$",
                         "nullable": True, "description": "one field"},
        "secret": {"type": "string", "minLength": 1, "maxLength": 4096, "nullable": True,
                   "description": "the HMAC key (without one, deliveries are not signed)"},
        "event_filter": {"type": "string", "enum": ["all", "state_changes", "conflicts"]},
        "format": {"type": "string", "enum": ["conflux", "gitops"]},
        "enabled": {"type": "boolean"}}
    hook = {"type": "object", "required": ["id", "url", "enabled", "event_filter", "format",
                                           "failure_count", "source"],
            "properties": {"id": text, "url": text, "enabled": {"type": "boolean"},
                           "entity_filter": text, "field_filter": text,
                           "event_filter": text, "format": text, "failure_count": count,
                           "last_error": text,
                           "source": {"type": "string", "enum": ["api", "webhooks.toml"]}}}
    hook_id = {"name": "webhook_id", "in": "path", "required": True, "schema": text}
    return {
        "/v1/webhooks": {
            "get": {"summary": "every webhook: those of webhooks.toml (read-only) and those "
                               "registered here", "responses": {
                                   **_ok({"type": "object", "required": ["webhooks", "total"],
                                          "properties": {"webhooks": {"type": "array",
                                                                      "items": hook},
                                                         "total": count}}),
                                   **_errors(401, 403)}},
            "post": {"summary": "register a webhook (the original's)",
                     "requestBody": _body({"type": "object", "required": ["url"],
                                           "additionalProperties": False,
                                           "properties": hook_props}),
                     "responses": {**_ok({"type": "object",
                                          "required": ["id", "url", "enabled"]}),
                                   **_errors(400, 401, 403, 408, 413, 415, 422)}}},
        "/v1/webhooks/{webhook_id}": {
            "get": {"summary": "one webhook", "parameters": [hook_id],
                    "responses": {**_ok(hook), **_errors(401, 403, 404)}},
            "put": {"summary": "change a registered webhook (what the body names)",
                    "parameters": [hook_id],
                    "requestBody": _body({"type": "object", "additionalProperties": False,
                                          "properties": hook_props}),
                    "responses": {**_ok(hook),
                                  **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422)}},
            "delete": {"summary": "remove a registered webhook", "parameters": [hook_id],
                       "responses": {**_ok({"type": "object", "required": ["deleted", "id"]}),
                                     **_errors(400, 401, 403, 404, 409)}}},
        "/health": {"get": {"summary": "liveness, as the original answers it", "security": [],
                            "responses": _ok({"type": "object",
                                              "required": ["status", "version"]})}},
        "/v1/state/{entity_path}": {"get": {
            "summary": "an entity's resolved fields, in the original's shape",
            "parameters": [path, env_param],
            "responses": {**_ok(entity), **_errors(400, 401, 403, 404, 422)}}},
        "/v1/log": {"get": {
            "summary": "the op log, newest first, in the original's shape",
            "parameters": [{"name": "entity_id", "in": "query", "required": False,
                            "schema": entity_schema}, *paging],
            "responses": {**_ok(log), **_errors(400, 401, 403, 404, 422)}}},
        "/v1/log/{entity_path}": {"get": {
            "summary": "one entity's operations, newest first, in the original's shape",
            "parameters": [path, *paging],
            "responses": {**_ok(log), **_errors(400, 401, 403, 404, 422)}}},
        "/v1/envs": {"get": {
            "summary": "the environments: the base, all of them, each overlay's parent",
            "responses": {**_ok({"type": "object", "required": ["base", "environments",
                                                                "inheritance"]}),
                          **_errors(401)}}},
        "/v1/envs/{env_name}/state": {"get": {
            "summary": "every entity of an environment, with where each value comes from",
            "parameters": [{"name": "env_name", "in": "path", "required": True,
                            "schema": env_schema}],
            "responses": {**_ok({"type": "object", "required": ["environment", "entities",
                                                                "root_entities"],
                                 "properties": {"environment": text,
                                                "entities": {"type": "array", "items": entity},
                                                "root_entities": {"type": "array",
                                                                  "items": text}}}),
                          **_errors(401, 403, 404)}}},
        "/v1/envs/diff": {"get": {
            "summary": "field by field, where two environments' resolved values differ",
            "parameters": [{"name": n, "in": "query", "required": True, "schema": env_schema}
                           for n in ("from", "to")],
            "responses": {**_ok({"type": "object", "required": ["from_env", "to_env",
                                                                "differences"]}),
                          **_errors(400, 401, 403, 404)}}},
    }

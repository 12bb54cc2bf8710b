"""The OpenAPI 3 document served at ``/v1/openapi.json``: exactly the routes ``create_app``
serves (a test compares the two)."""

from __future__ import annotations

from conflux import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes):
    return {str(c): {"description": _REASONS[c],
                     "content": {"application/json": {"schema": _ERROR}}} for c in codes}


_REASONS = {400: "malformed request", 401: "no or bad credentials", 403: "denied by RBAC",
            404: "no such entity, environment, operation or milestone",
            409: "a precondition failed, or nothing to commit / schema violations (milestones)",
            413: "body over the limit", 415: "unsupported content type",
            422: "the schema refused the value",
            503: "busy with other large bodies, or the store unavailable: retry"}


def _ok(schema, description="OK"):
    return {"200": {"description": description,
                    "content": {"application/json": {"schema": schema},
                                "application/msgpack": {"schema": schema}}}}


def _body(schema):
    return {"required": True,
            "content": {"application/json": {"schema": schema},
                        "application/msgpack": {"schema": schema}}}


_ENV = {"name": "env", "in": "query", "required": False, "schema": {"type": "string"},
        "description": "environment (default: the base)"}
_ENTITY = {"name": "entity_id", "in": "path", "required": True,
           "schema": {"type": "string"}, "description": "entity id, e.g. route.api-v1"}
_SECURITY = [{"apiKey": []}]


def openapi_document() -> dict:
    any_value = {}
    op = {
        "type": "object", "required": ["type", "entity_id"], "additionalProperties": False,
        "properties": {
            "type": {"type": "string", "enum": ["set_field", "unset_field", "add_elements",
                                                "remove_elements", "delete_entity",
                                                "resolve"]},
            "entity_id": {"type": "string"}, "field": {"type": "string"},
            "value": any_value, "elements": {"type": "array", "items": any_value},
            "env": {"type": "string"}, "intent": {"type": "string"},
            "op_id": {"type": "string", "maxLength": 128},
            "hlc": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]},
            "base": {"type": "array", "items": {"type": "string"}},
            "observed": {"type": "array", "items": {"type": "array",
                                                    "items": {"type": "string"}}},
            "override": {"type": "boolean"}, "signature": {"type": "string"},
            "key_id": {"type": "string"},
        }}
    ack = {"type": "object", "required": ["op_id", "hlc", "seq"],
           "properties": {"op_id": {"type": "string"}, "hlc": {"type": "string"},
                          "seq": {"type": "integer"}, "duplicate": {"type": "boolean"},
                          "dry_run": {"type": "boolean"}, "change": {"type": "object"}}}
    fields = {"type": "object", "additionalProperties": {"type": "object"}}
    entity_view = {"type": "object", "required": ["entity_id", "env", "fields"],
                   "properties": {"entity_id": {"type": "string"}, "env": {"type": "string"},
                                  "fields": fields}}
    log_entry = {"type": "object", "required": ["seq", "op_id", "type", "actor", "hlc"],
                 "properties": {"seq": {"type": "integer"}, "op_id": {"type": "string"},
                                "type": {"type": "string"}, "actor": {"type": "string"},
                                "hlc": {"type": "string"}}}
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
                         {"type": "object", "required": ["ops"], "additionalProperties": False,
                          "properties": {"ops": {"type": "array", "minItems": 1,
                                                 "items": {"$ref": "#/components/schemas/Op"}}}}
                     ]}),
                     "responses": {**_ok({"oneOf": [
                         {"$ref": "#/components/schemas/Ack"},
                         {"type": "object", "required": ["ops"],
                          "properties": {"ops": {"type": "array", "items": {
                              "$ref": "#/components/schemas/Ack"}}}}]}),
                         **_errors(400, 401, 403, 404, 409, 413, 415, 422, 503)}},
            "get": {"summary": "the op log, oldest first, by sequence number",
                    "parameters": [
                        {"name": "after", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 0}},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 10000}}],
                    "responses": {**_ok({"type": "object", "required": ["ops", "next"],
                                         "properties": {"ops": {"type": "array",
                                                                "items": log_entry},
                                                        "next": {"type": "integer"}}}),
                                  **_errors(400, 401, 403)}}},
        "/v1/state": {"get": {"summary": "resolved state of an environment",
                              "parameters": [_ENV],
                              "responses": {**_ok({"type": "object",
                                                   "required": ["env", "entities"]}),
                                            **_errors(400, 401, 404)}}},
        "/v1/entities/{entity_id}": {"get": {
            "summary": "an entity's resolved fields", "parameters": [_ENTITY, _ENV],
            "responses": {**_ok(entity_view), **_errors(400, 401, 403, 404, 422)}}},
        "/v1/blame/{entity_id}": {"get": {
            "summary": "per field, the operation that set it", "parameters": [_ENTITY, _ENV],
            "responses": {**_ok(entity_view), **_errors(400, 401, 403, 404, 422)}}},
        "/v1/status": {"get": {"summary": "project status",
                               "responses": {**_ok({"type": "object"}), **_errors(401)}}},
        "/v1/promote": {"post": {
            "summary": "copy resolved values to another environment as one operation",
            "requestBody": _body({"type": "object", "required": ["from", "to"],
                                  "additionalProperties": False,
                                  "properties": {"from": {"type": "string"},
                                                 "to": {"type": "string"},
                                                 "entities": {"type": "array",
                                                              "items": {"type": "string"}},
                                                 "intent": {"type": "string"},
                                                 "dry_run": {"type": "boolean"}}}),
            "responses": {**_ok({"$ref": "#/components/schemas/Ack"}),
                          **_errors(400, 401, 403, 404, 413, 415, 422)}}},
        "/v1/conflicts": {"get": {"summary": "review-field conflicts", "parameters": [_ENV],
                                  "responses": {**_ok({"type": "object",
                                                       "required": ["conflicts"]}),
                                                **_errors(400, 401, 404)}}},
        "/v1/conflicts/resolve": {"post": {
            "summary": "settle a review conflict",
            "requestBody": _body({"type": "object", "required": ["entity_id", "field", "value"],
                                  "additionalProperties": False,
                                  "properties": {"entity_id": {"type": "string"},
                                                 "field": {"type": "string"}, "value": any_value,
                                                 "env": {"type": "string"},
                                                 "intent": {"type": "string"}}}),
            "responses": {**_ok({"$ref": "#/components/schemas/Ack"}),
                          **_errors(400, 401, 403, 404, 413, 415, 422)}}},
        "/v1/milestones": {
            "get": {"summary": "milestones, newest first",
                    "responses": {**_ok({"type": "object", "required": ["milestones"],
                                         "properties": {"milestones": {
                                             "type": "array", "items": milestone}}}),
                                  **_errors(401, 403)}},
            "post": {"summary": "commit the resolved state to git as the next milestone",
                     "requestBody": _body({"type": "object", "required": ["message"],
                                           "additionalProperties": False,
                                           "properties": {"message": {"type": "string"},
                                                          "environments": {
                                                              "type": "array", "minItems": 1,
                                                              "items": {"type": "string"}},
                                                          "envs": {
                                                              "type": "array", "minItems": 1,
                                                              "items": {"type": "string"},
                                                              "deprecated": True,
                                                              "description": "the older name "
                                                              "of environments"},
                                                          "force": {"type": "boolean"},
                                                          "push": {"type": "boolean"}}}),
                     "responses": {"201": {"description": "the milestone",
                                           "content": {"application/json": {"schema": milestone},
                                                       "application/msgpack": {
                                                           "schema": milestone}}},
                                   **_errors(400, 401, 403, 404, 409, 413, 415, 422)}}},
        "/v1/milestones/{milestone_id}": {"get": {
            "summary": "one milestone, by number or commit id ('latest' for the newest)",
            "parameters": [{"name": "milestone_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {**_ok(milestone), **_errors(400, 401, 403, 404)}}},
        "/v1/diff": {"get": {
            "summary": "per entity and field: the value at a milestone and now, with the "
                       "operations in between",
            "parameters": [{"name": "milestone", "in": "query", "required": False,
                            "schema": {"type": "string"},
                            "description": "number or commit id (default: the latest)"}, _ENV],
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
                 "schema": {"type": "string"}, "description": "a sequence number, hlc:... or "
                                                              "ISO date/time"},
                {"name": "until", "in": "query", "required": False,
                 "schema": {"type": "string"}}],
            "responses": {"200": {"description": "JSON Lines: one operation a line, then "
                                                 "the signed checkpoint (docs/security.md)",
                                  "content": {"application/x-ndjson": {
                                      "schema": {"type": "string"}}}},
                          **_errors(400, 401, 403, 422, 503)}}},
        "/v1/watch": {"get": {
            "summary": "changes as server-sent events; resume with Last-Event-ID",
            "parameters": [
                {"name": "entity", "in": "query", "required": False,
                 "schema": {"type": "string"}}, _ENV,
                {"name": "after", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0}},
                {"name": "timeout", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0, "maximum": 86400},
                 "description": "close the stream after this many seconds (0: never)"},
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "schema": {"type": "string"}}],
            "responses": {"200": {"description": "an event stream",
                                  "content": {"text/event-stream": {"schema":
                                                                    {"type": "string"}}}},
                          **_errors(400, 401, 403, 404, 422)}}},
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
                "Op": op, "Ack": ack,
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {
                              "type": "object", "required": ["code", "message"],
                              "properties": {"code": {"type": "string"},
                                             "message": {"type": "string"},
                                             "field": {"type": "string"}}}}}},
        },
    }

"""Generate the reference pages docs/cli.md and docs/rest.md from the code.

``docs/cli.md`` is built from the argparse tree (``conflux.cli.get_parser()``), the same one
``--help`` and the man page (``make man``) come from; ``docs/rest.md`` from the OpenAPI
document the daemon serves at ``/v1/openapi.json`` (``conflux.api.openapi``). Run it after
changing a command, an option, a route or a help text:

    make docs                          # or: .venv/bin/python docs/gen_docs.py
    .venv/bin/python docs/gen_docs.py --check   # exit 1 if a page is out of date

The test suite (tests/test_docs.py) runs the same comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
COMMAND = "make docs"
#: Wide enough that usage lines rarely wrap; fixed so the output does not depend on the
#: terminal the generator runs in.
_WIDTH = 96


# --------------------------------------------------------------------------------------------
# The command line


@contextlib.contextmanager
def _builtin_formats_only():
    """Help epilogs that list the formats show the built-in ones: the reference must not
    depend on which plugins happen to be installed where it is generated."""
    from conflux import formats
    from conflux.formats.builtin import BUILTIN

    saved = formats._REGISTRY
    formats._REGISTRY = formats.Registry(list(BUILTIN))
    try:
        yield
    finally:
        formats._REGISTRY = saved


def _cell(text: str) -> str:
    """Text for a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _prose(text: str | None) -> str:
    return " ".join((text or "").split())


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _subcommands(parser: argparse.ArgumentParser):
    """``(name, parser, help)`` of a parser's subcommands, in the order ``--help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, sub, helps.get(name, "")


def _option_cell(action: argparse.Action) -> str:
    if not action.option_strings:
        text = f"`{action.metavar or action.dest}`"
    elif action.nargs == 0:
        text = ", ".join(f"`{o}`" for o in action.option_strings)
    else:
        metavar = action.metavar or action.dest.upper()
        text = ", ".join(f"`{o} {metavar}`" for o in action.option_strings)
    return text.replace("|", "\\|")  # GitHub tables need it escaped inside code too


def _notes(action: argparse.Action) -> str:
    notes = []
    if action.required and action.option_strings:
        notes.append("required")
    if isinstance(action, argparse._AppendAction) and "repeatable" not in (action.help or ""):
        notes.append("repeatable")
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        notes.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
    if not action.option_strings and action.nargs == "?":
        notes.append("optional")
    if not action.option_strings and action.nargs == "*":
        notes.append("zero or more")
    if not action.option_strings and action.nargs == "+":
        notes.append("one or more")
    return "; ".join(notes)


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        help_text = _cell(action.help or "")
        notes = _notes(action)
        if notes:
            help_text = f"{help_text} ({notes})" if help_text else notes
        rows.append(f"| {_option_cell(action)} | {help_text} |")
    if not rows:
        return []
    return ["| argument | meaning |", "|---|---|", *rows]


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


def _command_section(path: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    out = [f"{'#' * level} {path}", ""]
    if parser.description:
        out += [_prose(parser.description), ""]
    out += ["```", _usage(parser), "```", ""]
    arguments = _arguments(parser)
    if arguments:
        out += arguments + [""]
    subs = list(_subcommands(parser))
    if subs:
        out += ["| subcommand | what it does |", "|---|---|"]
        out += [f"| [`{name}`](#{_anchor(f'{path} {name}')}) | {_cell(text)} |"
                for name, _, text in subs]
        out.append("")
    if parser.epilog:
        out += [_prose(parser.epilog), ""]
    for name, sub, _ in subs:
        out += _command_section(f"{path} {name}", sub, level + 1)
    return out


def cli_markdown() -> str:
    """The text of docs/cli.md."""
    from conflux.cli import get_parser

    with _builtin_formats_only():
        parser = get_parser()
        commands = list(_subcommands(parser))
        out = [
            "# Command-line reference",
            "",
            f"<!-- Generated from conflux.cli.get_parser() by docs/gen_docs.py: do not edit; "
            f"change the help texts in src/conflux/cli/ and run '{COMMAND}'. -->",
            "",
            _prose(parser.description),
            "",
            "Every command prints `--help`. Reading commands print text for people and, with "
            "`--json`, JSON for programs. Bad input prints one line on stderr naming what was "
            "wrong, exits with status 2 and writes nothing; other failures exit with 1.",
            "",
            "The same tree builds a manual page: `make man` writes `man/conflux.1` with "
            "[argparse-manpage](https://pypi.org/project/argparse-manpage/); read it with "
            "`man -l man/conflux.1`.",
            "",
            "```",
            _usage(parser),
            "```",
            "",
            *_arguments(parser),
            "",
            "Environment: `CONFLUX_PROJECT` (the default of `--dir`), `CONFLUX_ACTOR` (the "
            "default actor, `class:id`), `CONFLUX_SIGN_KEY` (the default of `conflux set "
            "--sign-key`), `CONFLUX_API_KEY` (the default of `conflux watch --api-key`), "
            "`CONFLUX_REQUIRE_EXTENSIONS=1` (fail instead of falling back to the pure-Python "
            "merge core when the compiled one does not load).",
            "",
            "| command | what it does |",
            "|---|---|",
            *[f"| [`conflux {name}`](#{_anchor('conflux ' + name)}) | {_cell(text)} |"
              for name, _, text in commands],
            "",
        ]
        for name, sub, _ in commands:
            out += _command_section(f"conflux {name}", sub, 2)
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# The REST API


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(schema: dict) -> str:
    """A short description of a JSON schema, for a table cell."""
    if not schema:
        return "any value"
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f"[{name}](#{name.lower()})"
    if "oneOf" in schema:
        return " or ".join(_type(s) for s in schema["oneOf"])
    kind = schema.get("type")
    limits = []
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    if "minimum" in schema and "maximum" in schema:
        limits.append(f"{schema['minimum']} to {schema['maximum']}")
    elif "minimum" in schema:
        limits.append(f"≥ {schema['minimum']}")
    if "maxLength" in schema:
        limits.append(f"at most {schema['maxLength']} characters")
    if "pattern" in schema and "](" not in schema["pattern"]:  # (the link checker's blind spot)
        limits.append(f"matching `{schema['pattern']}`")
    if "minItems" in schema:
        limits.append(f"at least {schema['minItems']}")
    if kind == "array":
        text = f"array of {_type(schema.get('items', {}))}"
    elif kind == "object" and schema.get("required"):
        text = "object with " + ", ".join(f"`{k}`" for k in schema["required"])
    elif kind == "object" and isinstance(schema.get("additionalProperties"), dict) \
            and "properties" not in schema:
        text = f"object of {_type(schema['additionalProperties'])}"
    else:
        text = kind or "any value"
    return f"{text} ({', '.join(limits)})" if limits else text


def _properties(schema: dict) -> list[str]:
    props = schema.get("properties")
    if not props:
        return []
    required = set(schema.get("required", ()))
    rows = ["| key | type | | description |", "|---|---|---|---|"]
    for name, sub in props.items():
        rows.append(f"| `{name}` | {_cell(_type(sub))} | "
                    f"{'required' if name in required else ''} | "
                    f"{_cell(sub.get('description', ''))} |")
    if schema.get("additionalProperties") is False:
        rows.append("")
        rows.append("No other keys are accepted.")
    return rows


def _schema_block(schema: dict) -> list[str]:
    """A schema as prose and tables: a reference, alternatives, or an object's keys."""
    if "oneOf" in schema:
        out = ["One of:", ""]
        for n, alt in enumerate(schema["oneOf"], 1):
            if "$ref" in alt or "properties" not in alt:
                out.append(f"{n}. {_type(alt)}")
                out.append("")
            else:
                out.append(f"{n}. an object:")
                out.append("")
                out += ["   " + line if line else "" for line in _properties(alt)]
                out.append("")
        return out
    if "properties" in schema:
        return _properties(schema) + [""]
    text = _type(schema)
    return [text[0].upper() + text[1:] + ".", ""]


def _content_types(content: dict) -> str:
    return ", ".join(f"`{c}`" for c in content)


def _operation(path: str, method: str, op: dict, default_security) -> list[str]:
    title = f"{method.upper()} {path}"
    out = [f"### {title}", "", _prose(op.get("summary", "")).capitalize() + ".", ""]
    security = op.get("security", default_security)
    out += ["Authentication: " + ("none." if security == [] else
                                  "an API key (`X-API-Key`) or a client certificate."), ""]
    params = op.get("parameters", [])
    if params:
        out += ["| parameter | in | type | | description |", "|---|---|---|---|---|"]
        for p in params:
            out.append(f"| `{p['name']}` | {p['in']} | {_cell(_type(p.get('schema', {})))} | "
                       f"{'required' if p.get('required') else 'optional'} | "
                       f"{_cell(p.get('description', ''))} |")
        out.append("")
    body = op.get("requestBody")
    if body:
        out += [f"Request body ({_content_types(body['content'])}):", ""]
        first = next(iter(body["content"].values()))
        out += _schema_block(first["schema"])
    out += ["| status | meaning | body |", "|---|---|---|"]
    for status, answer in op["responses"].items():
        content = answer.get("content", {})
        if content:
            schema = next(iter(content.values())).get("schema", {})
            shown = f"{_type(schema)} ({_content_types(content)})"
        else:
            shown = ""
        out.append(f"| {status} | {_cell(answer.get('description', ''))} | {_cell(shown)} |")
    out.append("")
    for status, answer in op["responses"].items():
        schema = next(iter(answer.get("content", {}).values()), {}).get("schema", {})
        if status.startswith("2") and _has_keys(schema):
            out += [f"Answer ({status}):", ""] + _schema_block(schema)
    return out


def _has_keys(schema: dict) -> bool:
    """Whether a schema describes an object's keys (directly or in an alternative)."""
    return bool(schema.get("properties")) or any(_has_keys(s) for s in schema.get("oneOf", ()))


_REST_INTRO = """\
The daemon (`conflux daemon`, see [operations.md](operations.md)) serves this API under `/v1`,
on `http://127.0.0.1:9400` by default. The OpenAPI 3 document it is generated from is served at
`/v1/openapi.json` and matches the routes exactly (a test compares them).

The request bodies below are JSON Schemas declared once (`conflux.api.bodies`): the daemon
checks every body against them before anything else (422 naming the key), and the document
serves them. A daemon serves them refined with its project's schema: its environments, entity
types and fields, each operation type with the fields it applies to, and each field's value
type, range, pattern and allowed values. A client generated from a daemon's document sends
what that daemon takes (a test runs Schemathesis over it and measures this). Query parameters
are held to the document too: one a route does not list, or a text parameter that does not
fit its pattern, is a 400; an environment or entity the project lacks is a 404.

## Conventions

**Authentication.** Every route except `GET /v1/health` and `GET /v1/openapi.json` needs an
actor: an API key in the `X-API-Key` header (its SHA-256 hash is listed in
`.conflux/api-keys.toml`), or, on a daemon started with `--client-ca`, a TLS client
certificate whose subject `api-keys.toml` maps to an actor (see
[security.md](security.md)). The actor of an operation is always the authenticated one, never
one named in the body. What each actor may do is decided by `.conflux/rbac.toml`; an operation
it may not do is refused with 403 and nothing is written.

**Bodies.** Requests are JSON (`Content-Type: application/json`) or msgpack
(`Content-Type: application/msgpack`), and must say which: a body without a content type is
refused (415), as a page on another origin could send one from a signed-in browser without
asking first; answers are JSON unless the request's `Accept` header
names `application/msgpack`. msgpack is the faster form for large batches. A body is sent
with a `Content-Length` or `Transfer-Encoding: chunked`, and is at most @BODY@ (413 beyond, as
soon as a chunked body passes it); it nests at most 100 levels of lists and maps (400 beyond),
and a field value in it at most 64 levels and `[limits] max_value_bytes` (1 MiB by default;
422 beyond). Each worker parses and holds at most @BUDGET@ of bodies at once, and a
request that finds no room within a minute is answered 503 `busy` (retry).

**Operations.** An operation on the wire is an [Op](#op) object: `type`, `entity_id`,
`field`, `value` (for `set_field` and `resolve`) or `elements` (for `add_elements` and
`remove_elements`), and optionally `env` (default: the base environment), `intent`, `op_id`
(a client id of at most 128 bytes makes retries safe: the same operation sent again by the
same actor is acknowledged again, `"duplicate": true`, and not applied twice; any other
operation under a logged id is refused, 409 `op_id_conflict`), `hlc` (text `hlc:<ms>.<counter>`
or the packed 64-bit integer), `base`, `observed`, `override`, `signature` and `key_id`.
`POST /v1/ops` takes one op or a batch `{"ops": [...]}`; a batch is atomic: one bad or
refused op refuses it whole, naming the op's index. See [concepts.md](concepts.md) for what
each type and option does. The [Ack](#ack) of each op of a request of at most 64 ops also says
what the merge made of it: `applied` (false when the field kept another value, e.g. a lower
write to a `max` field) and `value`, the field's resolved value after the commit.

**Errors.** Every error is a JSON (or msgpack) body `{"error": {"code": ..., "message": ...,
"field": ...}}` ([Error](#error)); `field` names the offending key or field where there is one.

| status | meaning |
|---|---|
| 400 | malformed request: no body, a body that is not valid JSON or msgpack or nested too deep, an unknown or bad query parameter, a bad header |
| 401 | no credentials, or an unknown API key or certificate |
| 403 | denied by `rbac.toml`, or a signature refused (`signature_refused`); nothing written. `GET /v1/status` and `GET /v1/ops` show the whole store: they need `read` on every entity in every environment |
| 404 | no such entity, environment or milestone |
| 409 | the state, not the request, is in the way: a `base` precondition failed (`precondition_failed`), an `op_id` already names another operation, another actor's or with other content (`op_id_conflict`; the message names its seq and actor), nothing to promote (`nothing_to_promote`), no conflict to resolve (`no_conflict`); for milestones, nothing to commit (`nothing_to_commit`) or schema violations (`violations`) |
| 408 | the body did not arrive within 30 s of the request's head (`request_timeout`) |
| 413 | the body is over @BODY@ (`body_too_large`) |
| 415 | no content type, or one other than JSON or msgpack (`unsupported_media_type`) |
| 422 | the body's shape or a value is refused (`invalid_value`): an unknown key, a wrong type, an unknown entity type, field or environment, a name or value over its limit, a value breaking its field's `min`, `max`, `pattern` or `one_of`; or an `hlc` too far ahead of the daemon's clock (`clock_skew`) |
| 503 | busy with other large bodies (`busy`), or the store unavailable (`store_unavailable`): retry |

Nothing a client sends is answered with a 500, and no answer names a path of the server (the
project's directory, its store, its rules): the daemon's log keeps them.

## The original Conflux's routes

Clients of the original (Rust) Conflux work unchanged: beside Conflux's routes the daemon
serves the original's, with its request bodies and its answers' keys (its gRPC service is
[grpc.md](grpc.md)).

| route | what it takes and answers |
|---|---|
| `GET /health` | `{"status": "ok", "version": ...}`, without credentials |
| `POST /v1/ops` | also the original's operations ([OriginalOp](#originalop)): `insert_entity` with `entity_type`, its initial `fields` and optionally `parent_id` and `position` (written together: a `move_entity` placing it, then one `set_field` per field), `move_entity` with `new_parent_id` and `new_position` (Conflux's `move_entity`), `remove_entity` (Conflux's `delete_entity`), `set_override` with `environment` (a `set_field` in that environment), `resolve_conflict` with `chosen_value` (Conflux's `resolve`). Every answer carries the original's keys beside Conflux's: `operation_id`, `timestamp`, `conflict` (a `review` field now holds concurrent candidates) and, with a conflict, `conflict_info` (`entity_id`, `field`, `contending_values`) |
| `POST /v1/ops/batch` | `{"operations": [...]}`, the original's operations or Conflux's; answers `{"results": [...], "total", "conflicts"}`. **Atomic here**: one refused operation refuses the batch and nothing is written (the original applied them one by one) |
| `GET /v1/state/{entity_path}` | one entity: `entity_id`, `entity_type`, `fields`, `parent_id`, `children` (in sibling order), `position` (when it has one), `tombstoned`; `?env=` |
| `GET /v1/log`, `GET /v1/log/{entity_path}` | the log, newest first: `entity_id`, `actor_id` (`id` or `class:id`), `limit` (100), `offset`; `{"operations": [...], "total", "has_more"}`, each entry with `id`, `timestamp`, `actor_id`, `actor_class`, `intent`, `type` and the operation's keys in the original's vocabulary (Conflux's own types keep their names), plus Conflux's `seq` and `env`. `total` counts the whole log |
| `GET /v1/envs` | `{"base", "environments", "inheritance": {overlay: parent}}` |
| `GET /v1/envs/{env_name}/state` | every entity of the environment with `field_sources`: per field, the overlay that holds the value, `"base"`, or `"default"` (the schema's default, which the original does not have); an unknown environment is 404 |
| `GET /v1/webhooks`, `POST /v1/webhooks`, `GET`/`PUT`/`DELETE /v1/webhooks/{webhook_id}` | webhooks managed over REST, as the original's: `url`, `entity_filter` (an entity id prefix), `field_filter`, `secret` (optional: unsigned without), `event_filter` (`all`, `state_changes`, `conflicts`), `format` (`conflux`: the original's payload, one change per POST; `gitops`: each milestone as a GitHub `push` event, which Argo CD's `/api/webhook` and Flux's `github` Receiver accept), `enabled`. Kept in `.conflux/webhooks.json` and followed by the daemon without a restart; the webhooks of `webhooks.toml` are listed too (`"source": "webhooks.toml"`), read-only (409), and win over a registration of the same id ([configuration.md](configuration.md#webhookstoml)). Needs the `admin` permission; secrets are never answered |
| `GET /v1/envs/diff?from=&to=` | `{"from_env", "to_env", "differences": [{"entity_id", "field", "from_value", "to_value"}]}`, field by field where the resolved values differ (defaults included) |

What differs, on purpose: the credentials name the actor; the original's `X-Conflux-Actor`
and `X-Conflux-Actor-Class` headers are read only with `[daemon] auth = "none"`, which serves
on loopback only ([configuration.md](configuration.md#configtoml)); the entity tree follows
Conflux's rules ([concepts.md](concepts.md#the-entity-tree)): the parent's type must declare
children of the entity's type (`[entity.TYPE.children]`), concurrent moves converge and a
move that would make a cycle is refused (422) where the store can see it, a removed parent's
children are shown under the nearest ancestor left, and one tree is kept for every
environment; a deleted entity is not listed (`tombstoned` is always false). `GET /v1/state` keeps
Conflux's shape (`{"env", "entities": {id: fields}}`).

Errors keep Conflux's shape (`{"error": {"code", "message", "field"}}`). The original answered
`{"error": message, "code": code}`; its codes and Conflux's:

| the original's code | status | Conflux's code |
|---|---|---|
| `missing_actor` | 401 | `unauthorized` |
| `invalid_actor_class` | 400 | (the credentials carry the class) |
| `forbidden` | 403 | `forbidden`, `signature_refused` |
| `entity_not_found`, `not_found` | 404 | `not_found` |
| `validation_error`, `operation_error` | 400 | `invalid_value` (422), `bad_request` (400), `precondition_failed`, `op_id_conflict`, `no_conflict` (409) |
| `store_error` | 500 | `store_unavailable` (503: retry) |
| `git_error`, `serialization_error`, `internal_error` | 500 | `internal`, `output_failed` (logged; never for a client's input) |

## Example

```sh
curl -s -H "X-API-Key: $KEY" -H 'Content-Type: application/json' \\
  -d '{"type": "set_field", "entity_id": "route.api-v1", "field": "weight", "value": 95,
       "intent": "load-response"}' \\
  http://127.0.0.1:9400/v1/ops
# {"op_id":"...","hlc":"hlc:1706012400123.0000","seq":42}
curl -s -H "X-API-Key: $KEY" 'http://127.0.0.1:9400/v1/entities/route.api-v1?env=staging'
curl -sN -H "X-API-Key: $KEY" 'http://127.0.0.1:9400/v1/watch?entity=route.api-v1'
```
"""


def rest_markdown() -> str:
    """The text of docs/rest.md."""
    from conflux.api.app import DEFAULT_BODY_LIMIT
    from conflux.api.openapi import openapi_document

    doc = openapi_document()
    # a worker's body budget is twice the body limit (conflux.api.app.create_app)
    intro = _REST_INTRO.replace("@BODY@", f"{DEFAULT_BODY_LIMIT >> 20} MiB").replace(
        "@BUDGET@", f"{2 * DEFAULT_BODY_LIMIT >> 20} MiB")
    default_security = doc.get("security", [])
    out = [
        "# REST API reference",
        "",
        f"<!-- Generated from conflux.api.openapi by docs/gen_docs.py: do not edit; change "
        f"the OpenAPI document and run '{COMMAND}'. -->",
        "",
        intro,
        "## Routes",
        "",
        "| method | path | what it does |",
        "|---|---|---|",
    ]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            title = f"{method.upper()} {path}"
            out.append(f"| {method.upper()} | [`{path}`](#{_anchor(title)}) | "
                       f"{_cell(op.get('summary', ''))} |")
    out.append("")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            out += _operation(path, method, op, default_security)
    out += ["## Schemas", ""]
    for name, schema in doc["components"]["schemas"].items():
        out += [f"### {name}", ""]
        out += _schema_block(schema)
        for key, sub in schema.get("properties", {}).items():
            if sub.get("properties"):
                out += [f"`{key}` is an object:", ""] + _schema_block(sub)
    scheme = doc["components"]["securitySchemes"]
    out += ["## Security schemes", ""]
    for name, s in scheme.items():
        out.append(f"- `{name}`: {s['type']} in the `{s['name']}` {s['in']}; "
                   f"{_prose(s.get('description', ''))}.")
    out += ["", f"Document version: OpenAPI {doc['openapi']}, title "
                f"{json.dumps(doc['info']['title'])}.", ""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------------------------

PAGES = {"cli.md": cli_markdown, "rest.md": rest_markdown}


def stale() -> list[str]:
    """The generated pages whose committed text differs from what the code gives now."""
    out = []
    for name, build in PAGES.items():
        path = DOCS / name
        if not path.exists() or path.read_text() != build():
            out.append(name)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/cli.md and docs/rest.md.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a page is out of date")
    args = parser.parse_args(argv)
    if args.check:
        found = stale()
        for name in found:
            print(f"docs/{name} is out of date: run '{COMMAND}'", file=sys.stderr)
        return 1 if found else 0
    for name, build in PAGES.items():
        (DOCS / name).write_text(build())
        print(f"wrote docs/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

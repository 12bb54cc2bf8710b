"""conflux watch: stream changes as they happen, from the local store or a daemon."""

from __future__ import annotations

import json
import os
import sys
import time

from conflux.cli._output import add_json, open_engine
from conflux.errors import ConfluxError, InputError


def add_parser(sub):
    p = sub.add_parser("watch", help="stream changes as they happen",
                       description="Print each operation as it is committed, from the local "
                                   "store or, with --url, from a daemon (server-sent events, "
                                   "resumed after a dropped connection without missing or "
                                   "repeating anything).")
    p.add_argument("--entity", help="only operations on this entity")
    p.add_argument("--env", help="only operations in this environment")
    p.add_argument("--after", type=int, metavar="SEQ",
                   help="start after this sequence number (default: from now on)")
    p.add_argument("--url", help="a daemon's base URL, e.g. http://127.0.0.1:9400")
    p.add_argument("--api-key", default=os.environ.get("CONFLUX_API_KEY"),
                   help="the daemon's API key (default: $CONFLUX_API_KEY)")
    p.add_argument("--timeout", type=float, default=0,
                   help="stop after this many seconds (default: run until interrupted)")
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    deadline = time.monotonic() + args.timeout if args.timeout else None
    events = (_remote(args, deadline) if args.url else _local(args, deadline))
    for entry in events:
        if args.json:
            print(json.dumps(entry, default=str), flush=True)
        else:
            target = ".".join(p for p in (entry.get("entity_id"), entry.get("field")) if p)
            value = entry.get("value", entry.get("elements", ""))
            intent = f"  ({entry['intent']})" if entry.get("intent") else ""
            print(f"{entry['seq']:>6}  {entry['hlc']}  [{entry['actor_class']}:"
                  f"{entry['actor']}]  {entry['env']}: {entry['type']} {target} "
                  f"{json.dumps(value) if value != '' else ''}{intent}".rstrip(), flush=True)


def _local(args, deadline):
    engine = open_engine(args)
    if args.env:
        engine.schema.env_chain(args.env)
    if args.entity:
        engine.schema.split_entity_id(args.entity)
    seq = args.after if args.after is not None else engine.last_seq()
    while deadline is None or time.monotonic() < deadline:
        ops, read_to = engine.changes(seq, entity=args.entity, env=args.env)
        for op in ops:
            yield engine.op_dict(op)
        if read_to == seq:
            time.sleep(0.1)
        seq = read_to


def _remote(args, deadline):
    import urllib.error
    import urllib.parse
    import urllib.request

    params = {k: v for k, v in (("entity", args.entity), ("env", args.env)) if v}
    last = args.after
    if last is not None:
        params["after"] = str(last)
    base = args.url.rstrip("/") + "/v1/watch"
    backoff = 0.5
    while deadline is None or time.monotonic() < deadline:
        query = dict(params)
        if deadline is not None:
            query["timeout"] = str(max(1, int(deadline - time.monotonic())))
        request = urllib.request.Request(f"{base}?{urllib.parse.urlencode(query)}")
        if args.api_key:
            request.add_header("X-API-Key", args.api_key)
        if last is not None:
            request.add_header("Last-Event-ID", str(last))
        try:
            with urllib.request.urlopen(request, timeout=30) as stream:
                backoff = 0.5
                for event in _sse(stream):
                    last = int(event["id"])
                    yield json.loads(event["data"])
                if deadline is not None:
                    return
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            print(f"conflux watch: {base}: {getattr(exc, 'reason', exc)}; reconnecting",
                  file=sys.stderr)
            time.sleep(backoff)
            backoff = min(backoff * 2, 10)


def _sse(stream):
    """Server-sent events (``id``/``event``/``data`` lines, blank line between)."""
    event: dict[str, str] = {}
    for raw in stream:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "data" in event and "id" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value[1:] if value.startswith(" ") else value


def _http_error(exc) -> ConfluxError:
    try:
        message = json.loads(exc.read())["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = exc.reason
    error = InputError if 400 <= exc.code < 500 else ConfluxError
    return error(f"{exc.url}: {exc.code} {message}")

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
                                   "store, from a daemon's REST API (--url: server-sent "
                                   "events) or from its gRPC service (--grpc); a dropped "
                                   "connection is resumed without missing or repeating "
                                   "anything.")
    p.add_argument("--entity", help="only operations on this entity")
    p.add_argument("--field", help="only changes of this field")
    p.add_argument("--env", help="only operations in this environment")
    p.add_argument("--after", type=int, metavar="SEQ",
                   help="start after this sequence number (default: from now on)")
    p.add_argument("--url", help="a daemon's base URL, e.g. http://127.0.0.1:9400")
    p.add_argument("--grpc", metavar="HOST:PORT",
                   help="a daemon's gRPC address (conflux daemon --grpc-port), e.g. "
                        "127.0.0.1:9401")
    p.add_argument("--cacert", metavar="PEM",
                   help="with --grpc: use TLS, trusting this CA's certificates")
    p.add_argument("--cert", metavar="PEM",
                   help="with --grpc and --cacert: a client certificate (mutual TLS)")
    p.add_argument("--key", metavar="PEM", help="the client certificate's private key")
    p.add_argument("--api-key", default=os.environ.get("CONFLUX_API_KEY"),
                   help="the daemon's API key (default: $CONFLUX_API_KEY)")
    p.add_argument("--timeout", type=float, default=0,
                   help="stop after this many seconds (default: run until interrupted)")
    p.add_argument("-o", "--output", choices=("plain", "json"), default=None,
                   help="plain: a line per change (default); json: a JSON object per line")
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    if args.url and args.grpc:
        raise InputError("--url and --grpc are two ways to one daemon: give one")
    if (args.cacert or args.cert or args.key) and not args.grpc:
        raise InputError("--cacert, --cert and --key go with --grpc")
    if (args.cert is None) != (args.key is None) or (args.cert and not args.cacert):
        raise InputError("--cert and --key go together, with --cacert")
    as_json = args.json or args.output == "json"
    deadline = time.monotonic() + args.timeout if args.timeout else None
    if args.grpc:
        events = _grpc(args, deadline)
    else:
        events = _remote(args, deadline) if args.url else _local(args, deadline)
    for entry in events:
        if args.field is not None and entry.get("field") != args.field:
            continue
        if as_json:
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


def _grpc(args, deadline):
    """Changes from the daemon's gRPC service (``WatchState``), as ``op_dict`` shows ops;
    resumed after the last one seen when the stream ends."""
    import grpc

    from conflux.rpc import conflux_pb2 as pb
    from conflux.rpc import conflux_pb2_grpc as pb_grpc

    if args.cacert:
        def read(path):
            try:
                with open(path, "rb") as fh:
                    return fh.read()
            except OSError as exc:
                raise InputError(f"{path}: {exc.strerror or exc}") from None
        credentials = grpc.ssl_channel_credentials(
            read(args.cacert), read(args.key) if args.key else None,
            read(args.cert) if args.cert else None)
        channel = grpc.secure_channel(args.grpc, credentials)
    else:
        channel = grpc.insecure_channel(args.grpc)
    stub = pb_grpc.ConfluxServiceStub(channel)
    metadata = (("x-api-key", args.api_key),) if args.api_key else ()
    # the last seq received whole: an op of several changes (a promotion) is resumed from
    # its start if the stream ends inside it (its first changes then come again)
    last = args.after
    current = None
    backoff = 0.5
    with channel:
        while deadline is None or time.monotonic() < deadline:
            request = pb.WatchRequest()
            if args.entity:
                request.entity_filter = args.entity
            if args.field:
                request.field_filter = args.field
            if args.env:
                request.environment = args.env
            if last is not None:
                request.after_seq = last
            left = None if deadline is None else max(0.1, deadline - time.monotonic())
            try:
                for change in stub.WatchState(request, metadata=metadata, timeout=left):
                    backoff = 0.5
                    if change.seq != current:
                        last, current = current if current is not None else last, change.seq
                    if args.entity and change.entity_id != args.entity:
                        continue  # the filter is a prefix
                    yield _change_entry(change)
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return
                if code not in (grpc.StatusCode.UNAVAILABLE,
                                grpc.StatusCode.RESOURCE_EXHAUSTED):
                    raise (InputError if code != grpc.StatusCode.INTERNAL else ConfluxError)(
                        f"{args.grpc}: {code.name} {exc.details()}") from None
                print(f"conflux watch: {args.grpc}: {exc.details()}; reconnecting",
                      file=sys.stderr)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)


def _change_entry(change) -> dict:
    entry = {"seq": change.seq, "op_id": change.operation_id,
             "type": change.operation_type, "env": change.environment,
             "entity_id": change.entity_id or None,
             "field": change.field if change.HasField("field") else None,
             "actor": change.actor_id, "actor_class": change.actor_class,
             "intent": change.intent, "hlc": change.timestamp}
    if change.HasField("value_json"):
        key = "elements" if change.operation_type.endswith("_elements") else "value"
        entry[key] = json.loads(change.value_json)
    return entry


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

"""``conflux.v1.ConfluxService``: the original Conflux's gRPC service over Conflux's engine.

Thin, as the REST resources are: each rpc authenticates the caller (``x-api-key`` metadata,
or the verified client certificate), turns the messages into the original's operations,
those into Conflux's (``conflux.original``), and hands them to the engine and the daemon's
commit service, the same path a REST write takes. Errors become gRPC statuses with
Conflux's message, and its error code in the trailing metadata ``conflux-error-code``.

``WatchState`` follows the op log like the SSE stream (``conflux.api.watch.LogFollower``:
one reader per process, shared by every watcher), as a coroutine per stream: an idle
watcher costs no thread. A watcher that takes no message for ``stall_s`` seconds is ended
with ``RESOURCE_EXHAUSTED``, naming the sequence number to resume after, so one that stopped
reading holds nothing of the others'.
"""

from __future__ import annotations

import asyncio
import json
import logging

import grpc

from conflux.api.ops import admitted
from conflux.api.media import to_json
from conflux.daemon.commits import _in_pool
from conflux.errors import AuthError, ConfluxError, InputError, NotFound
from conflux.limits import check_parsed
from conflux.original import answers, conflux_ops, original_type
from conflux.rpc import conflux_pb2 as pb
from conflux.rpc import conflux_pb2_grpc as pb_grpc

__all__ = ["ConfluxService", "MAX_MESSAGE"]

log = logging.getLogger("conflux.grpc")

#: The largest request message taken (as a REST body), and the largest answer sent.
MAX_MESSAGE = 16 << 20

#: Batches of more ops than this are checked in a thread, beside the event loop.
_INLINE_OPS = 256

_MAX_SEQ = 2 ** 63

_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
          409: grpc.StatusCode.FAILED_PRECONDITION, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          415: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
          429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}

# The original's change types, by the original's operation name (``original_type``);
# Conflux's own field operations are its set_field changes.
_CHANGE = {"set_field": pb.CHANGE_TYPE_SET_FIELD, "set_override": pb.CHANGE_TYPE_SET_OVERRIDE,
           "remove_entity": pb.CHANGE_TYPE_REMOVE_ENTITY,
           "move_entity": pb.CHANGE_TYPE_MOVE_ENTITY,
           "resolve_conflict": pb.CHANGE_TYPE_RESOLVE_CONFLICT,
           "unset_field": pb.CHANGE_TYPE_SET_FIELD, "add_elements": pb.CHANGE_TYPE_SET_FIELD,
           "remove_elements": pb.CHANGE_TYPE_SET_FIELD}


class ConfluxService(pb_grpc.ConfluxServiceServicer):
    def __init__(self, engine, access, committer, follower, pool, *, stall_s: float = 30.0):
        self.engine = engine
        self.access = access
        self.committer = committer
        self.follower = follower
        self.pool = pool
        self.stall_s = stall_s
        self.base = engine.schema.base_env

    # -- writes ---------------------------------------------------------------------------------

    async def SubmitOperation(self, request, context):
        async with _answering(context):
            actor = self._actor(context, request)
            ops = self._ops(request, "")
            return (await self._submit([ops], actor, context, batch=False))[0]

    async def SubmitBatch(self, request, context):
        async with _answering(context):
            actor = self._actor(context, request.operations[0] if request.operations
                                else None)
            if not request.operations:
                raise InputError("a batch needs at least one operation", field="operations")
            groups = [self._ops(op, f"operation {i}: ")
                      for i, op in enumerate(request.operations)]
            results = await self._submit(groups, actor, context, batch=True)
            return pb.SubmitBatchResponse(results=results, total=len(results),
                                          conflicts=sum(r.has_conflict for r in results))

    def _ops(self, request, where: str) -> list[dict]:
        """The Conflux ops one ``SubmitRequest`` stands for."""
        kind = request.WhichOneof("operation")
        if kind is None:
            raise InputError(f"{where}operation required (set_field, insert_entity, ...)",
                             field="operation")
        if kind == "op_json":
            raw = _json(request.op_json, f"{where}op_json")
            if not isinstance(raw, dict):
                raise InputError(f"{where}op_json must be one operation, a JSON object",
                                 field="op_json")
            return conflux_ops(raw, self.base, where=where)
        message = getattr(request, kind)
        raw = {"type": kind, "entity_id": message.entity_id}
        if kind == "insert_entity":
            raw["entity_type"] = message.entity_type
            for key in ("parent_id", "position"):
                if message.HasField(key):
                    raw[key] = getattr(message, key)
            raw["fields"] = {name: _json(text, f"{where}initial_fields_json[{name!r}]")
                             for name, text in message.initial_fields_json.items()}
        if kind != "insert_entity" and kind != "remove_entity":
            raw["field"] = message.field
        if kind in ("set_field", "set_override", "resolve_conflict"):
            raw["chosen_value" if kind == "resolve_conflict" else "value"] = _json(
                message.value_json, f"{where}value_json")
        elif kind in ("add_elements", "remove_elements"):
            raw["elements"] = _json(message.elements_json, f"{where}elements_json")
        if kind == "set_override":
            raw["environment"] = message.environment
        elif message.DESCRIPTOR.fields_by_name.get("environment") is not None and \
                message.HasField("environment"):
            key = "environment" if kind == "resolve_conflict" else "env"
            raw[key] = message.environment
        if request.HasField("intent"):
            raw["intent"] = request.intent
        if request.HasField("operation_id"):
            raw["op_id"] = request.operation_id
        return conflux_ops(raw, self.base, where=where)

    async def _submit(self, groups: list[list[dict]], actor, context, *, batch: bool):
        """Commit every group's ops in one atomic batch; one ``SubmitResponse`` per group,
        answered as REST answers the original's ops (``conflux.original.answers``)."""
        engine = self.engine
        ops = [op for group in groups for op in group]
        await self._blocking(admitted, engine, ops, actor, batch=batch, dry_run=False,
                             here=len(ops) <= _INLINE_OPS)
        acks = await self.committer.apply(ops, actor, admitted=True)
        done = answers(engine, ops, [len(g) for g in groups],
                       [ack.to_dict(engine.core) for ack in acks])
        return [pb.SubmitResponse(
            operation_id=a["op_id"], timestamp=a["hlc"], seq=a["seq"],
            has_conflict=a["conflict"], duplicate=a.get("duplicate", False),
            operation_ids=a.get("operation_ids", [a["op_id"]])) for a in done]

    # -- reads ----------------------------------------------------------------------------------

    async def GetState(self, request, context):
        async with _answering(context):
            actor = self._actor(context)
            env = request.environment if request.HasField("environment") else None
            state, seq = await self._blocking(self.engine.snapshot, env, reader=actor)
            # the newest op's clock only: a reader of part of the state may have it too
            last = await self._blocking(self.engine.log, start=seq, limit=1)
            return pb.GetStateResponse(
                state_json=to_json(state), seq=seq,
                latest_timestamp=self.engine.core.hlc_format(last[0].hlc) if last else "")

    async def GetEntity(self, request, context):
        async with _answering(context):
            actor = self._actor(context)
            engine = self.engine
            env = request.environment if request.HasField("environment") else self.base
            try:
                fields = engine.get(request.entity_id, env, reader=actor)
            except NotFound:
                engine.schema.env_chain(env)  # an unknown environment stays NOT_FOUND
                return pb.GetEntityResponse(entity_json="null", exists=False)
            found = {name: item["value"] for name, item in fields.items()}
            return pb.GetEntityResponse(entity_json=to_json(found), exists=True)

    # -- watching -------------------------------------------------------------------------------

    async def WatchState(self, request, context):
        async with _answering(context):
            actor = self._actor(context)
            engine = self.engine
            env = request.environment if request.HasField("environment") else None
            entity = request.entity_filter if request.HasField("entity_filter") else None
            field = request.field_filter if request.HasField("field_filter") else None
            # with no prefix, all of it must be readable; a prefix is filtered op by op
            engine.feed_filter(env=env, reader=actor if entity is None else None)
            keep = _Filter(engine, actor, entity, field, env)
            follower = self.follower
            follower.watchers += 1
            try:
                if request.include_initial_state:
                    seq = await self._snapshot(context, keep, env or self.base, actor)
                elif request.HasField("after_seq"):
                    if request.after_seq > _MAX_SEQ:
                        raise InputError(f"after_seq must be at most {_MAX_SEQ}",
                                         field="after_seq")
                    seq = request.after_seq
                else:
                    seq = engine.last_seq()
                await self._follow(context, keep, seq)
            finally:
                follower.watchers -= 1

    async def _snapshot(self, context, keep, env, actor) -> int:
        state, seq = await self._blocking(self.engine.snapshot, env, reader=actor)
        for entity_id, fields in state.items():
            if not keep.entity(entity_id):
                continue
            for name, value in fields.items():
                if keep.field(name):
                    await self._send(context, pb.StateChange(
                        change_type=_change_type("set_field", env, self.base),
                        entity_id=entity_id, field=name, value_json=to_json(value), seq=seq,
                        environment=env, initial=True, operation_type="set_field"), seq)
        return seq

    async def _follow(self, context, keep, seq: int) -> None:
        follower = self.follower
        while not follower.closing:
            events, read_to = follower.page(seq)
            for op, _ in events:
                for change in keep.changes(op):
                    await self._send(context, change, op.seq - 1)
            if read_to > seq:
                seq = read_to
                continue
            await follower.wait(15.0)

    async def _send(self, context, message, resume_after: int) -> None:
        try:
            await asyncio.wait_for(context.write(message), self.stall_s)
        except asyncio.TimeoutError:
            raise _Stalled(resume_after) from None

    # -- shared ---------------------------------------------------------------------------------

    def _actor(self, context, request=None):
        metadata = dict(context.invocation_metadata() or ())
        if "x-api-key" in metadata:
            return self.access.keys.authenticate(metadata["x-api-key"])
        subject = context.auth_context().get("x509_subject")
        if subject:
            return self.access.certs.actor_for_subject(subject[0].decode())
        if self.access.anonymous:  # [daemon] auth = "none": as the original, the caller's
            return self.access.named(  # own name (the request's actor_id, or metadata)
                metadata.get("x-conflux-actor") or getattr(request, "actor_id", None),
                metadata.get("x-conflux-actor-class") or getattr(request, "actor_class",
                                                                 None))
        raise AuthError("no credentials: send an API key in the x-api-key metadata or use a "
                        "client certificate")

    async def _blocking(self, fn, *args, here: bool = False, **kwargs):
        """``fn(*args, **kwargs)``, on the event loop when ``here``, else in a thread."""
        if here:
            return fn(*args, **kwargs)
        return await _in_pool(self.pool, fn, *args, **kwargs)


class _Stalled(Exception):
    def __init__(self, resume_after: int):
        self.resume_after = resume_after


class _Filter:
    """Which logged changes a watcher is sent: its filters, and what its actor may read."""

    def __init__(self, engine, actor, entity, field, env):
        self.engine, self.actor = engine, actor
        self.prefix, self.name, self.env = entity, field, env
        self.may_read = engine.policy.may_read
        self.base = engine.schema.base_env

    def entity(self, entity_id: str) -> bool:
        return self.prefix is None or entity_id.startswith(self.prefix)

    def field(self, name) -> bool:
        return self.name is None or name == self.name

    def changes(self, op) -> list:
        parts = op.children or (op,)
        out = []
        engine = self.engine
        for part in parts:
            entity, field = part.entity or "", part.field or None
            if not self.entity(entity) or (self.name is not None and field != self.name):
                continue
            if self.env is not None and part.env != self.env:
                continue
            if not self.may_read(self.actor, entity or "*", field, part.env):
                continue
            kind = engine.core.OP_NAMES[part.type]
            value = part.value if part.value is not None else part.elements
            if kind == "move_entity":
                value = {"parent": part.value[0], "position": part.value[1]}
            change = pb.StateChange(
                change_type=_change_type(kind, part.env, self.base), entity_id=entity,
                actor_id=op.actor, actor_class=op.actor_class,
                timestamp=engine.core.hlc_format(part.hlc or op.hlc),
                operation_id=part.op_id or op.op_id, seq=op.seq, environment=part.env,
                operation_type=kind)
            if field is not None:
                change.field = field
            if value is not None or kind == "set_field":
                change.value_json = to_json(value)
            if op.intent:
                change.intent = op.intent
            out.append(change)
        return out


def _change_type(kind: str, env: str, base: str) -> int:
    """The original's change type of a Conflux operation type in ``env``."""
    return _CHANGE.get(original_type(kind, env, base), pb.CHANGE_TYPE_UNSPECIFIED)


def _json(text: str, what: str):
    try:
        value = json.loads(text)
    except RecursionError:
        raise InputError(f"{what} is nested too deeply", field="value_json") from None
    except ValueError as exc:
        raise InputError(f"{what} is not JSON: {exc}", field=what.rpartition(": ")[2]) from None
    check_parsed(value, what)
    return value


class _answering:
    """Around an rpc: a Conflux error becomes the status its HTTP status stands for, with
    its message, and its code in the trailing metadata; anything else is logged and answered
    INTERNAL without details."""

    def __init__(self, context):
        self.context = context

    async def __aenter__(self):
        return self

    async def __aexit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError)):
            return False
        context = self.context
        if isinstance(exc, _Stalled):
            context.set_trailing_metadata((("conflux-error-code", "watch_stalled"),
                                           ("conflux-resume-after", str(exc.resume_after))))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the watcher read nothing for too long and was ended; resume "
                                f"with after_seq={exc.resume_after}")
        if isinstance(exc, ConfluxError):
            code = _CODES.get(exc.http_status, grpc.StatusCode.INTERNAL)
            if exc.code == "op_id_conflict":
                code = grpc.StatusCode.ALREADY_EXISTS
            context.set_trailing_metadata((("conflux-error-code", exc.code),))
            if exc.http_status >= 500:
                log.error("%s", exc)
            await context.abort(code, str(exc))
        log.exception("gRPC call failed")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error (logged by the daemon)")

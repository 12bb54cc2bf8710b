"""The audit trail: the op log as a hash-chained JSON Lines file ending with a signed
checkpoint, and its verification against a key registry.

**Lines.** ``export_lines`` streams one JSON object per logged operation, oldest first,
reading the log a chunk at a time (constant memory however long it is): ``seq``, ``op_id``,
``hlc`` and ``time`` (its wall-clock part, UTC), ``actor`` and ``actor_class``, ``intent``,
``type``, ``env``, ``entity_id``, ``field``, ``old`` (the field's value before, where the log
has it) and ``new`` (the value, or the elements added or removed), ``base``, ``override``,
``signature`` and ``key_id`` when the operation was signed, a promotion's field operations
under ``operations``; and last ``hash``.

**The chain.** ``hash`` is the hex SHA-256 of the previous line's hash (32 raw bytes) followed
by the line's canonical bytes: the line's JSON object without its ``hash`` member, encoded as
canonical msgpack (``conflux.signing.canonical``: map keys sorted by their UTF-8 bytes,
shortest integers, 64-bit floats; nested at most 80 levels). The line before sequence number 1
has the hash of 32 zero bytes. The chain runs over the whole log, whatever the export's range:
an export from ``--since N`` starts from the hash of line N-1 of the full log, as its
checkpoint records. Since the hash covers the parsed object, not its text, a line reformatted
by a JSON tool still verifies; any change of a value, added or removed member or moved line
does not.

**The checkpoint** is the last line, ``{"checkpoint": {...}, "signature": "..."}``, with
``format`` (``conflux-audit/1``), ``node`` (the store's id), ``since`` and ``until`` (as
requested, or null), ``prev_seq`` and ``prev_hash`` (the line before the first exported one;
0 and the zero hash at the log's start), ``first_seq`` and ``last_seq`` (null when nothing is
exported), ``count``, ``head_hash`` (the last line's hash; ``prev_hash`` when empty),
``log_last_seq`` (the log's length at the export), ``require`` (for each actor class
``config.toml`` requires to sign: the sequence number from which every operation of the class
in this export is signed; promotions are never signed), ``time`` and ``key_id``. The signature
is Ed25519, base64, over ``canonical(["conflux-audit-checkpoint/1", checkpoint])``, made with
the project's audit key.

**The project's audit key** is made at the first export: the private key in
``.conflux/audit-key.pem`` (PKCS#8 PEM, mode 0600), the public key registered in
``keys.json`` as ``conflux-audit-<8 hex>`` for the actor ``system:conflux-audit``, so the
registry a verifier is given holds it. A checkpoint counts only if signed by a key of that
actor, valid at the checkpoint's time. To replace the key, revoke it (``conflux keys revoke``:
older checkpoints stay valid) and move the file away; the next export makes a new one.

**Verifying** (``conflux.audit_verify.verify``) checks, and reports by line number: each line's hash against the
chain, the sequence numbers (gaps, repeats, renumbering), ``time`` against ``hlc``, each
signature against the registry (``conflux.signing``), the checkpoint (its signature, that the
first line follows ``prev_seq``/``prev_hash``, the count, the last sequence number and the
head hash), the ``require`` rules (an unsigned line of a class the checkpoint says signs from
its sequence number on), and, given an earlier checkpoint, that this export extends it: its
chain passes through the earlier head (same sequence number, same hash).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import secrets
import threading
import time

from conflux.codec import Packer
from conflux.kernel import core, op_parts
from conflux.errors import ConfluxError, InputError
from conflux.signing import Registry, canonical, op_content

__all__ = ["export_lines", "summary", "project_key", "line_digest",
           "checkpoint_content", "AuditKeyError", "GENESIS", "KEY_FILE",
           "AUDIT_ACTOR"]

FORMAT = "conflux-audit/1"
_CHECKPOINT_DOMAIN = "conflux-audit-checkpoint/1"
_ACTOR_ID, _ACTOR_CLASS = "conflux-audit", "system"
AUDIT_ACTOR = f"{_ACTOR_CLASS}:{_ACTOR_ID}"
KEY_FILE = "audit-key.pem"
GENESIS = bytes(32)
#: An audit line nests its values (map fields, up to 64 levels) a few levels down.
_MAX_DEPTH = 80
_CHUNK = 1000
#: Every this many lines, the chain's hash is kept in the store, so that an export from
#: ``--since N`` hashes at most this many lines before N instead of the whole log before it.
_MARK = 4096
_MARK_KEY = "audit-chain/1:"
_NEVER_SIGNED = ("promote",)


class AuditKeyError(ConfluxError):
    """The project's audit key cannot be made, read, registered or used."""

    http_status = 503
    code = "audit_key_unavailable"


# ---------------------------------------------------------------------------------------------
# export


def _is_seq(when) -> bool:
    return isinstance(when, int) or (str(when).isascii() and str(when).isdigit())


def _first_at(engine, when) -> int:
    """The first sequence number logged at or after ``when`` (an hlc:... or an ISO date), or
    the one after the log's end."""
    ops = engine.log(since=when, start=1, reverse=False, limit=1)
    return ops[0].seq if ops else engine.last_seq() + 1


def export_lines(engine, since=None, until=None, *, reader=None, actor=None, entity=None):
    """The audit trail as an iterator of JSON lines (bytes, each ending with a newline), the
    signed checkpoint last; ``since`` and ``until`` (a sequence number, an hlc:... or an ISO
    date) are checked, and the project's audit key made or read, at once, before the first
    line. A ``reader`` needs ``admin`` in the base environment.

    ``actor`` (``id`` or ``class:id``) and ``entity`` (an entity id, or a prefix of ids) keep
    the operations of one actor, or touching those entities: each run of operations left out
    becomes one line ``{"elided": [first seq, last seq], "hash": ...}`` carrying the chain's
    hash after it, so the lines kept still verify against the whole log's chain, and the
    checkpoint records the filter and how many operations were elided."""
    start, last, log_last = _range(engine, since, until, reader)
    signing_key, key_id = project_key(engine)
    keep = _filter(actor, entity)
    return _lines(engine, start, last, log_last, since, until, signing_key, key_id, keep,
                  {"actor": actor, "entity": entity} if keep else None)


def _range(engine, since, until, reader) -> tuple[int, int, int]:
    if reader is not None:
        engine.policy.require(reader, "admin", None, None, engine.schema.base_env)
    log_last = engine.last_seq()
    start = 1 if since is None else max(1, int(since)) if _is_seq(since) else \
        _first_at(engine, since)
    start = min(start, log_last + 1)
    last = log_last
    if until is not None:
        last = min(last, int(until) if _is_seq(until) else _first_at(engine, until) - 1)
    return start, last, log_last


def _filter(actor, entity):
    """``keep(op)`` for an export's filters, or None without any."""
    if not actor and not entity:
        return None

    def keep(op) -> bool:
        if actor and op.actor != actor and f"{op.actor_class}:{op.actor}" != actor:
            return False
        return not entity or any((p.entity or "").startswith(entity) for p in op_parts(op))
    return keep


def summary(engine, since=None, until=None, *, reader=None, actor=None, entity=None,
            registry: Registry | None = None) -> tuple[int, int]:
    """What ``export_lines`` with the same arguments would export, before it does: the
    operations it keeps, and (given the project's key ``registry``) how many of their
    signatures fail to verify. For the answer's headers, sent before its body."""
    start, last, _ = _range(engine, since, until, reader)
    keep = _filter(actor, entity)
    count = failed = 0
    if registry is not None:
        registry.refresh()
    seq = start
    while seq <= last:
        ops = engine.log(start=seq, reverse=False, limit=min(_CHUNK, last - seq + 1))
        if not ops:
            break
        for op in ops:
            if keep is not None and not keep(op):
                continue
            count += 1
            if registry is not None and op.signature is not None and \
                    _check_line(line_of(engine, op), registry) is not None:
                failed += 1
        seq = ops[-1].seq + 1
    return count, failed


def _lines(engine, start, last, log_last, since, until, signing_key, key_id, keep=None,
           filters=None):
    required = sorted(engine.settings.require_signatures)
    unsigned = {cls: start - 1 for cls in required}  # the last unsigned seq of each class
    prev = head = chain_hash(engine, start - 1)
    count, elided, marks, seq = 0, 0, [], start
    run = None  # the operations left out since the last line: [first, last]
    lines = hashlib.sha256()  # a filtered export's lines, in order (the checkpoint signs it)
    try:
        while seq <= last:
            ops = engine.log(start=seq, reverse=False, limit=min(_CHUNK, last - seq + 1))
            if not ops:
                break
            for op in ops:
                line = line_of(engine, op)
                if op.signature is None and op.actor_class in unsigned and \
                        line["type"] not in _NEVER_SIGNED:
                    unsigned[op.actor_class] = op.seq
                if keep is not None and not keep(op):
                    _, head = _chained(line, head)
                    run = [op.seq, op.seq] if run is None else [run[0], op.seq]
                    elided += 1
                else:
                    if run is not None:
                        yield _elided(run, head, lines)
                        run = None
                    text, head = _chained(line, head)
                    lines.update(_KEPT + op.seq.to_bytes(8, "big") + head)
                    count += 1
                    yield text
                if op.seq % _MARK == 0:
                    marks.append((op.seq, head))
            seq = ops[-1].seq + 1
        if run is not None:
            yield _elided(run, head, lines)
    finally:
        _remember(engine, marks)
    checkpoint = {
        "format": FORMAT, "node": engine.node,
        "since": None if since is None else str(since),
        "until": None if until is None else str(until),
        "prev_seq": start - 1, "prev_hash": prev.hex(),
        "first_seq": start if count else None, "last_seq": start + count - 1 if count else None,
        "count": count, "head_hash": head.hex(), "log_last_seq": log_last,
        "require": {cls: after + 1 for cls, after in unsigned.items()},
        "time": _wall_time(int(time.time() * 1000)), "key_id": key_id}
    if filters is not None:  # a filtered export: lines cover first_seq..last_seq with elisions
        # lines_hash: every line in order, kept and elided; an elided run's hash cannot be
        # recomputed from the file, so the signature covers each one, and which lines were
        # kept, directly
        checkpoint.update(filter={k: v for k, v in filters.items() if v}, elided=elided,
                          first_seq=start if count + elided else None,
                          last_seq=start + count + elided - 1 if count + elided else None,
                          lines_hash=lines.hexdigest())
    signature = signing_key.sign(checkpoint_content(checkpoint)).signature
    yield (json.dumps({"checkpoint": checkpoint,
                       "signature": base64.b64encode(signature).decode()},
                      separators=(",", ":")) + "\n").encode()


#: What ``lines_hash`` takes of each line of a filtered export: a kept line's seq and hash, an
#: elided run's first and last seq and the hash after it.
_KEPT, _ELIDED = b"k", b"e"


def _elided(run: list, head: bytes, lines) -> bytes:
    lines.update(_ELIDED + run[0].to_bytes(8, "big") + run[1].to_bytes(8, "big") + head)
    return (json.dumps({"elided": run, "hash": head.hex()}, separators=(",", ":")) +
            "\n").encode()


def line_of(engine, op) -> dict:
    """One operation's audit line, without its hash."""
    core = engine.core
    kind = core.OP_NAMES[op.type]
    line = {"seq": op.seq, "op_id": op.op_id, "hlc": core.hlc_format(op.hlc),
            "time": _wall_time(op.hlc >> 16),
            "actor": op.actor, "actor_class": op.actor_class, "intent": op.intent,
            "type": kind, "env": op.env, "entity_id": op.entity or None,
            "field": op.field or None}
    d = engine.op_dict(op)
    line["old"] = d.get("previous")
    line["new"] = d.get("elements") if kind in ("add_elements", "remove_elements") \
        else d.get("value")
    line["base"] = list(op.base) if op.base is not None else None
    line["override"] = bool(op.override)
    if op.signature is not None:
        line["signature"], line["key_id"] = op.signature, op.key_id
    if op.children:
        line["operations"] = [{k: v for k, v in c.items() if k not in ("seq",)}
                              for c in d.get("operations", [])]
    return line


def _wall_time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def _json(line: dict) -> str:
    return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))


def _chained(line: dict, prev: bytes) -> tuple[bytes, bytes]:
    """A line's text with its ``hash``, and that hash."""
    text = _json(line)
    flat = _flat_content(line, _VARYING)
    digest = hashlib.sha256(prev + (flat if flat is not None else _content(json.loads(text))))
    head = digest.digest()
    return (text[:-1] + ',"hash":"' + digest.hexdigest() + '"}\n').encode(), head


def line_digest(line: dict, prev: bytes) -> bytes:
    """The chain hash of a line (a JSON object as parsed, without ``hash``) after ``prev``."""
    flat = _flat_content(line)
    return hashlib.sha256(prev + (flat if flat is not None else _content(line))).digest()


def _content(line: dict) -> bytes:
    return canonical(line, max_depth=_MAX_DEPTH)


#: The members of a line ``line_of`` makes that may hold more than a scalar.
_VARYING = ("old", "new", "base", "operations")


def _flat_content(line: dict, keys=None) -> bytes | None:
    """``_content`` of a line whose values are all scalars or lists of scalars (nearly every
    one), else None; ``keys``: only these members may be anything else (a line ``line_of``
    made; a line read back may hold anything anywhere).

    PERF: for such a line, msgpack's own encoding of the line with its keys in order is the
    canonical one (as ``signing.op_content`` relies on): one C call instead of a walk in
    Python. Keys sorted as text are sorted by their UTF-8 bytes (UTF-8 keeps code point
    order). Checking only the members that vary saves a third of the hashing's cost."""
    for value in line.values() if keys is None else map(line.get, keys):
        if type(value) not in _SCALARS and not _scalar(value) and not (
                type(value) is list and all(map(_scalar, value))):
            return None
    packer = _packers.__dict__.get("packer")
    if packer is None:  # one per thread: a daemon worker serves exports on several
        packer = _packers.packer = Packer(use_bin_type=True)
    try:
        return packer.pack_map_pairs(sorted(line.items()))
    except (OverflowError, ValueError, TypeError):
        packer.reset()
        return None  # out of range, or not UTF-8: canonical() says what is wrong


_SCALARS = frozenset((str, int, bool, type(None)))
_packers = threading.local()


def _scalar(value) -> bool:
    kind = type(value)
    return kind in _SCALARS or (kind is float and math.isfinite(value))


def checkpoint_content(checkpoint: dict) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return canonical([_CHECKPOINT_DOMAIN, checkpoint])


# -- the chain's hashes kept in the store ------------------------------------------------------


def chain_hash(engine, seq: int) -> bytes:
    """The chain's hash after line ``seq`` of the full log (``GENESIS`` for 0): from the
    nearest hash kept in the store at or below it, hashing the lines in between."""
    if seq <= 0:
        return GENESIS
    store = engine.store
    mark, head = seq - seq % _MARK, GENESIS
    with store.read() as txn:
        while mark > 0:
            found = store.meta_get(txn, f"{_MARK_KEY}{mark}")
            if found is not None:
                head = found
                break
            mark -= _MARK
    marks, at = [], mark + 1
    while at <= seq:
        ops = engine.log(start=at, reverse=False, limit=min(_CHUNK, seq - at + 1))
        if not ops:
            break
        for op in ops:
            head = line_digest(json.loads(_json(line_of(engine, op))), head)
            if op.seq % _MARK == 0:
                marks.append((op.seq, head))
        at = ops[-1].seq + 1
    _remember(engine, marks)
    return head


def _remember(engine, marks) -> None:
    """Keep the chain's hash at these sequence numbers (once each: the log never changes)."""
    if not marks:
        return
    store = engine.store
    with store.read() as txn:
        marks = [(s, h) for s, h in marks if store.meta_get(txn, f"{_MARK_KEY}{s}") is None]
    if not marks:
        return

    def body(txn):
        for s, h in marks:
            store.meta_put(txn, f"{_MARK_KEY}{s}", h)
    with contextlib.suppress(ConfluxError):  # a cache: the next export computes it again
        store.write(body)


# -- the project's audit key -------------------------------------------------------------------


def project_key(engine):
    """The project's audit signing key (a ``nacl.signing.SigningKey``) and its id in the
    registry: made and registered at the first call."""
    from conflux.signing import load_private_key, public_key_text

    path = os.path.join(engine.root, KEY_FILE)
    shown = f".conflux/{KEY_FILE}"
    if not os.path.exists(path):
        _make_key(path, shown)
    try:
        signing_key = load_private_key(path)
    except InputError as exc:
        raise AuditKeyError(str(exc).replace(path, shown)) from None
    registry = engine.signatures
    public = public_key_text(signing_key)
    try:
        key = registry.by_public_key(public)
        if key is None:
            key_id = f"{_ACTOR_ID}-{hashlib.sha256(bytes(signing_key.verify_key)).hexdigest()[:8]}"
            try:
                key = registry.register(key_id, AUDIT_ACTOR, public)
            except InputError:
                key = registry.by_public_key(public)  # another process registered it first
                if key is None:
                    raise
    except (InputError, OSError) as exc:
        raise AuditKeyError(f"cannot register the project's audit key in keys.json: "
                            f"{str(exc).replace(registry.path, 'keys.json')}") from None
    if not key.owned_by(_ACTOR_ID, _ACTOR_CLASS):
        raise AuditKeyError(f"{shown} is registered as {key.key_id} for {key.actor}, not "
                            f"{AUDIT_ACTOR}: checkpoints signed with it would not verify")
    if key.revoked is not None:
        raise AuditKeyError(f"the project's audit key {key.key_id} was revoked at "
                            f"{key.revoked}: move {shown} away, and the next export makes "
                            "and registers a new one")
    return signing_key, key.key_id


def _make_key(path: str, shown: str) -> None:
    """A new key at ``path``, unless another process makes one first (then that one)."""
    from nacl.signing import SigningKey

    from conflux.signing import write_private_key

    tmp = f"{path}.{secrets.token_hex(4)}.tmp"
    try:
        write_private_key(tmp, bytes(SigningKey.generate()))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # whole or not at all, and never over another process's key
    except (ConfluxError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).replace(tmp, shown)
        raise AuditKeyError(f"cannot make the project's audit key {shown}: {reason}") \
            from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _check_line(line: dict, registry: Registry) -> str | None:
    try:
        hlc = core.hlc_parse(line["hlc"])
        content = op_content(op_id=line["op_id"], type=line["type"], env=line["env"],
                             entity_id=line["entity_id"], field=line.get("field"),
                             value=line.get("new"), actor=line["actor"],
                             intent=line.get("intent") or "", hlc=hlc, base=line.get("base"),
                             override=line.get("override", False))
    except (KeyError, TypeError, ValueError, InputError) as exc:
        return f"cannot rebuild the signed content: {exc}"
    return registry.check(content, line["signature"], str(line.get("key_id")), line["actor"],
                          line.get("actor_class", ""), hlc >> 16, refresh=False)

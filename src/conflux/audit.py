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

**Verifying** (``verify``) checks, and reports by line number: each line's hash against the
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

__all__ = ["export_lines", "summary", "verify", "read_checkpoint", "project_key", "line_digest",
           "checkpoint_content", "Report", "AuditKeyError", "GENESIS", "KEY_FILE",
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
    try:
        while seq <= last:
            ops = engine.log(start=seq, reverse=False, limit=min(_CHUNK, last - seq + 1))
            if not ops:
                break
            for op in ops:
                line = line_of(engine, op)
                if keep is not None and not keep(op):
                    _, head = _chained(line, head)
                    run = [op.seq, op.seq] if run is None else [run[0], op.seq]
                    elided += 1
                else:
                    if run is not None:
                        yield _elided(run, head)
                        run = None
                    text, head = _chained(line, head)
                    count += 1
                    if op.signature is None and op.actor_class in unsigned and \
                            line["type"] not in _NEVER_SIGNED:
                        unsigned[op.actor_class] = op.seq
                    yield text
                if op.seq % _MARK == 0:
                    marks.append((op.seq, head))
            seq = ops[-1].seq + 1
        if run is not None:
            yield _elided(run, head)
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
        checkpoint.update(filter={k: v for k, v in filters.items() if v}, elided=elided,
                          first_seq=start if count + elided else None,
                          last_seq=start + count + elided - 1 if count + elided else None)
    signature = signing_key.sign(checkpoint_content(checkpoint)).signature
    yield (json.dumps({"checkpoint": checkpoint,
                       "signature": base64.b64encode(signature).decode()},
                      separators=(",", ":")) + "\n").encode()


def _elided(run: list, head: bytes) -> bytes:
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


# ---------------------------------------------------------------------------------------------
# verification


class Report:
    def __init__(self):
        self.lines = 0  # operation lines (the checkpoint aside)
        self.elided = 0  # operations a filtered export left out
        self.signed_ok = 0
        self.failures: list[tuple[int, int | None, str]] = []  # (line number, seq, reason)
        self.unsigned: list[tuple[int, int | None]] = []
        self.sequence: list[tuple[int, str]] = []  # (line number, what)
        self.checkpoint: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and not self.sequence and self.checkpoint is not None

    def problems(self) -> list[tuple[int, int | None, str]]:
        """Every failure, sequence problems included, by line number."""
        return sorted(self.failures + [(n, None, p) for n, p in self.sequence],
                      key=lambda item: item[0])

    def to_dict(self) -> dict:
        return {"lines": self.lines, "elided": self.elided, "signed_ok": self.signed_ok,
                "failures": [{"line": n, "seq": s, "reason": r} for n, s, r in self.failures],
                "sequence_problems": [{"line": n, "problem": p} for n, p in self.sequence],
                "unsigned": [{"line": n, "seq": s} for n, s in self.unsigned],
                "checkpoint": self.checkpoint, "ok": self.ok}


def _object(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            # two parsers could read two different lines from it
            raise ValueError(f"member {key!r} appears twice")
        seen[key] = value
    return seen


def _parse(raw) -> dict:
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    line = json.loads(text, object_pairs_hook=_object)
    if not isinstance(line, dict):
        raise ValueError("not a JSON object")
    return line


def read_checkpoint(stream) -> dict:
    """The checkpoint line (``{"checkpoint": ..., "signature": ...}``) ending an audit file,
    or alone in one: what a consumer keeps to check later exports against (``verify``'s
    ``extends``). Its signature is checked by ``verify``."""
    last = None
    for raw in stream:
        if raw.strip():
            last = raw
    try:
        line = _parse(last) if last is not None else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"its last line is not JSON ({exc})") from None
    if line is None or not isinstance(line.get("checkpoint"), dict):
        raise InputError("it does not end with an audit checkpoint line")
    return line


def verify(stream, registry: Registry, *, extends: dict | None = None) -> Report:
    """Check an audit file (an iterable of lines, bytes or text) against a registry; with
    ``extends`` (an earlier checkpoint line, ``read_checkpoint``), also that the file extends
    it. Memory grows with the unsigned lines only."""
    report = Report()
    registry.refresh()  # once: the registry is a file given for this check
    old = _head_of(extends)
    previous = last_seq = None
    first = None  # (line number, seq, line, claimed hash) of the first op line
    state = None  # the chain's hash after the previous line (as it claims, once checked)
    checkpoint = None
    at_old_head = None  # (line number, claimed hash) of the line at the earlier head
    unsigned = []  # (line number, seq, actor class, type)
    number = 0
    for number, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        try:
            line = _parse(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            report.failures.append((number, None, f"not an audit line: {exc}"))
            continue
        if checkpoint is not None:
            report.failures.append((number, None, "a line after the checkpoint, which ends "
                                                  "the export"))
            continue
        if "checkpoint" in line:
            checkpoint = (number, line)
            continue
        if "elided" in line:  # a filtered export: operations left out, the chain's hash after
            run, claimed = line.get("elided"), _claimed_hash(line.get("hash"))
            if not (isinstance(run, list) and len(run) == 2 and all(
                    type(x) is int for x in run) and 1 <= run[0] <= run[1]) or claimed is None:
                report.failures.append((number, None, "an elided line needs \"elided\": "
                                                      "[first seq, last seq] and a hash"))
                continue
            if previous is not None and run[0] != previous + 1:
                report.sequence.append((number, f"elided seq {_span(*run)} after {previous}"))
            if first is None:
                first = (number, run[0], None, claimed)
            previous = last_seq = run[1]
            report.elided += run[1] - run[0] + 1
            state = claimed
            if old is not None and run[0] <= old[0] <= run[1]:
                at_old_head = (number, claimed if old[0] == run[1] else None)
            continue
        seq = line.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            report.failures.append((number, None, "not an audit line: no sequence number"))
            continue
        report.lines += 1
        if previous is not None and seq != previous + 1:
            if seq <= previous:
                report.sequence.append((number, f"seq {seq} after {previous}: reordered or "
                                                f"repeated"))
            else:
                report.sequence.append((number, f"gap: seq {_span(previous + 1, seq - 1)} "
                                                f"missing before seq {seq}"))
        previous = seq if previous is None or seq > previous else previous
        last_seq = seq
        claimed = _claimed_hash(line.pop("hash", None))
        if claimed is None:
            report.failures.append((number, seq, "no hash (64 hex digits): not a line of a "
                                                 "chained audit export"))
        try:
            computed = line_digest(line, state) if state is not None else None
        except InputError as exc:
            report.failures.append((number, seq, f"cannot be hashed: {exc}"))
            computed = None
        if first is None:
            first = (number, seq, line, claimed)
        elif claimed is not None and computed is not None and claimed != computed:
            report.failures.append((number, seq, "hash mismatch: the line was changed, or a "
                                                 "line before it removed, added or moved"))
        state = claimed if claimed is not None else computed
        if old is not None and seq == old[0]:
            at_old_head = (number, claimed)
        problem = _time_problem(line)
        if problem:
            report.failures.append((number, seq, problem))
        if line.get("signature") is None:
            report.unsigned.append((number, seq))
            unsigned.append((number, seq, line.get("actor_class"), line.get("type")))
            continue
        reason = _check_line(line, registry)
        if reason is None:
            report.signed_ok += 1
        else:
            report.failures.append((number, seq, reason))
    if checkpoint is None:
        report.failures.append((number + 1, None, "no checkpoint: the file does not end with "
                                                  "the export's signed checkpoint line (cut "
                                                  "short, or lines removed at its end)"))
        return report
    _check_checkpoint(report, *checkpoint, registry, first, state, last_seq, unsigned,
                      extends, old, at_old_head)
    return report


def _span(a: int, b: int) -> str:
    return f"{a}" if a == b else f"{a}-{b}"


def _claimed_hash(value) -> bytes | None:
    if not isinstance(value, str) or len(value) != 64:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _time_problem(line: dict) -> str | None:
    try:
        wall = core.hlc_parse(line["hlc"]) >> 16
    except (KeyError, TypeError, ValueError, InputError):
        return None  # the signature check or the hash names what is wrong
    expected = _wall_time(wall)
    if line.get("time") != expected:
        return f"time {line.get('time')!r} is not its hlc's time ({expected}): edited"
    return None


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


def _checkpoint_problem(line: dict, registry: Registry) -> str | None:
    """Why a checkpoint line's signature does not hold, or None."""
    cp, signature = line.get("checkpoint"), line.get("signature")
    if not isinstance(signature, str):
        return "no signature"
    if not isinstance(cp.get("key_id"), str):
        return "no key_id"
    try:
        from conflux.signing import _ms

        when = _ms(cp.get("time"))
        content = checkpoint_content(cp)
    except (TypeError, ValueError, InputError) as exc:
        return f"cannot rebuild the signed content: {exc}"
    reason = registry.check(content, signature, cp["key_id"], _ACTOR_ID, _ACTOR_CLASS, when,
                            refresh=False)
    return None if reason is None else reason.replace("operation", "checkpoint")


_CHECKPOINT_FIELDS = {"prev_seq": int, "prev_hash": str, "count": int, "head_hash": str,
                      "require": dict}


def _fields(cp: dict) -> str | None:
    for name, kind in _CHECKPOINT_FIELDS.items():
        value = cp.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return name
    for name in ("prev_hash", "head_hash"):
        if _claimed_hash(cp[name]) is None:
            return name
    for name in ("first_seq", "last_seq"):
        value = cp.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return name
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in cp["require"].values()):
        return "require"
    return None


def _head_of(extends: dict | None):
    """``(seq, hash)`` of an earlier checkpoint's head, or None."""
    if extends is None:
        return None
    cp = extends["checkpoint"]
    if _fields(cp):
        return (-1, b"")
    head_seq = cp["last_seq"] if cp["count"] and cp.get("last_seq") is not None \
        else cp["prev_seq"]
    return head_seq, _claimed_hash(cp["head_hash"])


def _check_checkpoint(report, number, line, registry, first, state, last_seq, unsigned,
                      extends, old, at_old_head) -> None:
    fail = report.failures.append
    cp = line.get("checkpoint")
    if not isinstance(cp, dict):
        fail((number, None, "checkpoint: not an object"))
        return
    report.checkpoint = cp
    problem = _checkpoint_problem(line, registry)
    if problem:
        fail((number, None, f"checkpoint: {problem}: it was edited, or not made by this "
                            "project"))
    bad = _fields(cp)
    if bad:
        fail((number, None, f"checkpoint: {bad!r} is missing or malformed"))
        return
    prev_seq, prev_hash = cp["prev_seq"], bytes.fromhex(cp["prev_hash"])
    head_hash = bytes.fromhex(cp["head_hash"])
    if report.lines != cp["count"]:
        fail((number, None, f"checkpoint: the export has {cp['count']} lines, this file "
                            f"{report.lines}"))
    if report.elided != cp.get("elided", 0):
        fail((number, None, f"checkpoint: the export elided {cp.get('elided', 0)} operations, "
                            f"this file {report.elided}"))
    if first is None:
        if head_hash != prev_hash:
            fail((number, None, "checkpoint: no lines, yet the head hash is not prev_hash"))
    else:
        f_number, f_seq, f_line, f_claimed = first
        if f_seq != prev_seq + 1:
            what = f"seq {_span(prev_seq + 1, f_seq - 1)} missing at the start" \
                if f_seq > prev_seq + 1 else "seq out of order"
            fail((f_number, f_seq, f"the export follows seq {prev_seq} (checkpoint), so starts "
                                   f"at seq {prev_seq + 1}: {what}"))
        follows = True
        with contextlib.suppress(InputError):  # reported with the line already
            # (an elided first run cannot be hashed here: the lines after it are checked
            # against its hash, and the signed head hash closes the chain)
            follows = f_claimed is None or f_line is None or \
                line_digest(f_line, prev_hash) == f_claimed
        if not follows:
            fail((f_number, f_seq, "hash mismatch: the line does not follow the checkpoint's "
                                   "prev_hash: it was changed, or lines before it removed"))
        expected_last = cp.get("last_seq")
        if last_seq != expected_last:
            what = f"seq {_span(last_seq + 1, expected_last)} removed at the end" \
                if isinstance(expected_last, int) and last_seq < expected_last else "mismatch"
            fail((number, None, f"checkpoint: the export ends at seq {expected_last}, this "
                                f"file at seq {last_seq}: {what}"))
        if state != head_hash:
            fail((number, None, "checkpoint: the head hash is not the last line's: lines "
                                "removed or added at the end, or the chain recomputed"))
    for n, seq, cls, kind in unsigned:
        since = cp["require"].get(cls)
        if since is not None and seq >= since and kind not in _NEVER_SIGNED:
            fail((n, seq, f"unsigned, but [signatures] require covers {cls} actors: the "
                          f"checkpoint says every {cls} operation from seq {since} on is "
                          "signed (its signature was removed)"))
    if old is not None:
        _check_extends(report, number, cp, extends, old, at_old_head, registry)


def _check_extends(report, number, cp, extends, old, at_old_head, registry) -> None:
    fail = report.failures.append
    old_seq, old_hash = old
    if old_seq < 0:
        fail((number, None, "--extends: the earlier checkpoint is malformed"))
        return
    problem = _checkpoint_problem(extends, registry)
    if problem:
        fail((number, None, f"--extends: the earlier checkpoint: {problem}"))
    if extends["checkpoint"].get("node") != cp.get("node"):
        fail((number, None, f"--extends: the earlier checkpoint is of another log (node "
                            f"{extends['checkpoint'].get('node')}, this one "
                            f"{cp.get('node')})"))
    new_prev, new_prev_hash = cp["prev_seq"], bytes.fromhex(cp["prev_hash"])
    new_head = cp["last_seq"] if cp["count"] and cp.get("last_seq") is not None else new_prev
    if old_seq == new_prev:
        if new_prev_hash != old_hash:
            fail((number, None, f"--extends: this export follows seq {new_prev} with hash "
                                f"{new_prev_hash.hex()[:16]}..., the earlier checkpoint's head "
                                f"at seq {old_seq} is {old_hash.hex()[:16]}...: the log "
                                "before it was rewritten"))
    elif new_prev < old_seq <= new_head:
        if at_old_head is not None and at_old_head[1] is None:
            fail((at_old_head[0], old_seq, f"--extends: the earlier checkpoint's head, seq "
                                           f"{old_seq}, is inside a run this filtered export "
                                           "elided: check against an unfiltered export"))
        elif at_old_head is None or at_old_head[1] != old_hash:
            where = at_old_head[0] if at_old_head else number
            fail((where, old_seq, f"--extends: the earlier checkpoint's head is seq {old_seq} "
                                  f"with hash {old_hash.hex()[:16]}..., this export's line for "
                                  "it has another: the log up to there was rewritten"))
    elif old_seq > new_head:
        fail((number, None, f"--extends: the earlier checkpoint covers up to seq {old_seq}, "
                            f"this export only up to seq {new_head}: it does not extend it"))
    else:
        fail((number, None, f"--extends: this export starts at seq {new_prev + 1}, after the "
                            f"earlier checkpoint's head (seq {old_seq}): export with --since "
                            f"{old_seq + 1} or earlier to check it"))

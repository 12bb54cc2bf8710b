"""Verifying an audit file (``conflux.audit`` writes them): each line's hash against the
chain, the sequence numbers, time against hlc, every signature against a key registry, the
signed checkpoint that ends the file (and, for a filtered export, the lines it signs), the
``[signatures] require`` rules it carries, and that a later export extends an earlier one.
``conflux.audit``'s module documentation describes the format."""

from __future__ import annotations

import contextlib
import hashlib
import json

from conflux.audit import (_ACTOR_CLASS, _ACTOR_ID, _ELIDED, _KEPT, _NEVER_SIGNED, _check_line,
                           _wall_time, checkpoint_content, line_digest)
from conflux.errors import InputError
from conflux.kernel import core
from conflux.signing import Registry

__all__ = ["verify", "read_checkpoint", "Report"]


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
    lines_hash = hashlib.sha256()  # as _lines computes it, for a filtered export
    kept_lines = []  # (line number, seq, actor, actor class, parts' entities)
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
            lines_hash.update(_ELIDED + run[0].to_bytes(8, "big") + run[1].to_bytes(8, "big") +
                              claimed)
            if old is not None and run[0] <= old[0] <= run[1]:
                # the hash after a run is signed (lines_hash); one inside it is not in the file
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
        if state is not None and 0 <= seq < 2 ** 64:
            lines_hash.update(_KEPT + seq.to_bytes(8, "big") + state)
        kept_lines.append((number, seq, line.get("actor"), line.get("actor_class"),
                           [line.get("entity_id")] + [c.get("entity_id") for c in
                                                      line.get("operations") or ()
                                                      if isinstance(c, dict)]))
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
    _check_filter(report, checkpoint, lines_hash.hexdigest(), kept_lines)
    return report


def _check_filter(report, checkpoint, lines_hash: str, kept_lines) -> None:
    """A filtered export (its checkpoint names a ``filter``): the signed ``lines_hash`` covers
    every line, kept or elided, and each kept line is one the filter keeps."""
    number, line = checkpoint
    cp = line.get("checkpoint")
    if not isinstance(cp, dict):
        return
    filters = cp.get("filter")
    if filters is None:
        if report.elided:
            report.failures.append((number, None, "elided lines, but the checkpoint names no "
                                                  "filter: not an export it signed"))
        return
    if not isinstance(filters, dict) or cp.get("lines_hash") != lines_hash:
        report.failures.append((number, None, "checkpoint: the lines are not the ones it "
                                              "signed (lines_hash): a line was changed, "
                                              "removed, added, or moved in or out of an "
                                              "elided run"))
    actor, entity = filters.get("actor"), filters.get("entity")
    for n, seq, op_actor, cls, entities in kept_lines:
        if actor and op_actor != actor and f"{cls}:{op_actor}" != actor:
            report.failures.append((n, seq, f"kept, but not an operation of {actor} (the "
                                            "checkpoint's filter)"))
        elif entity and not any(isinstance(e, str) and e.startswith(entity)
                                for e in entities):
            report.failures.append((n, seq, f"kept, but it touches no entity {entity}... "
                                            "(the checkpoint's filter)"))


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

"""The audit trail: the op log as JSON Lines, and its verification against a key registry.

``export_lines`` streams one JSON object per logged operation, oldest first, reading the log
a chunk at a time (constant memory however long it is): ``seq``, ``op_id``, ``hlc`` and
``time`` (its wall-clock part, UTC), ``actor`` and ``actor_class``, ``intent``, ``type``,
``env``, ``entity_id``, ``field``, ``old`` (the field's value before, where the log has it)
and ``new`` (the value, or the elements added or removed), ``base``, ``override``, and
``signature`` and ``key_id`` when the operation was signed. A promotion's line lists its
field operations under ``operations``.

``verify`` reads such a file back: every signed line is checked against the registry (the key
must belong to the line's actor and be valid at the line's time) by recomputing the signed
content (``conflux.signing``) from the line; unsigned lines are listed apart; a sequence number
that is not the previous one plus one is a gap (a line removed) or a reordering.
"""

from __future__ import annotations

import datetime as dt
import json

from conflux.engine import core
from conflux.errors import InputError
from conflux.signing import Registry, op_content

__all__ = ["export_lines", "verify", "Report"]

_CHUNK = 1000


def _is_seq(when) -> bool:
    return isinstance(when, int) or (str(when).isascii() and str(when).isdigit())


def _first_at(engine, when) -> int:
    """The first sequence number logged at or after ``when`` (an hlc:... or an ISO date), or
    the one after the log's end."""
    ops = engine.log(since=when, start=1, reverse=False, limit=1)
    return ops[0].seq if ops else engine.last_seq() + 1


def export_lines(engine, since=None, until=None):
    """The audit trail as an iterator of JSON lines (bytes, each ending with a newline);
    ``since`` and ``until`` (a sequence number, an hlc:... or an ISO date) are checked at
    once, before the first line."""
    seq = 1 if since is None else max(1, int(since)) if _is_seq(since) else \
        _first_at(engine, since)
    last = engine.last_seq()
    if until is not None:
        last = min(last, int(until) if _is_seq(until) else _first_at(engine, until) - 1)
    return _lines(engine, seq, last)


def _lines(engine, seq: int, last: int):
    while seq <= last:
        ops = engine.log(start=seq, reverse=False, limit=min(_CHUNK, last - seq + 1))
        if not ops:
            return
        for op in ops:
            yield (json.dumps(line_of(engine, op), ensure_ascii=False, default=str,
                              separators=(",", ":")) + "\n").encode()
        seq = ops[-1].seq + 1


def line_of(engine, op) -> dict:
    """One operation's audit line."""
    core = engine.core
    kind = core.OP_NAMES[op.type]
    wall = op.hlc >> 16
    line = {"seq": op.seq, "op_id": op.op_id, "hlc": core.hlc_format(op.hlc),
            "time": dt.datetime.fromtimestamp(wall / 1000, dt.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
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


class Report:
    def __init__(self):
        self.lines = 0
        self.signed_ok = 0
        self.failures: list[tuple[int, int | None, str]] = []  # (line number, seq, reason)
        self.unsigned: list[tuple[int, int | None]] = []
        self.sequence: list[tuple[int, str]] = []  # (line number, what)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.sequence

    def to_dict(self) -> dict:
        return {"lines": self.lines, "signed_ok": self.signed_ok,
                "failures": [{"line": n, "seq": s, "reason": r} for n, s, r in self.failures],
                "sequence_problems": [{"line": n, "problem": p} for n, p in self.sequence],
                "unsigned": [{"line": n, "seq": s} for n, s in self.unsigned], "ok": self.ok}


def verify(stream, registry: Registry) -> Report:
    """Check an audit file (an iterable of lines, bytes or text) against a registry."""
    report = Report()
    registry.refresh()  # once: the registry is a file given for this check
    previous = None
    for number, raw in enumerate(stream, 1):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if not text.strip():
            continue
        report.lines += 1
        try:
            line = json.loads(text)
            if not isinstance(line, dict):
                raise ValueError("not an object")
            seq = line.get("seq")
            if not isinstance(seq, int):
                raise ValueError("no sequence number")
        except ValueError as exc:
            report.failures.append((number, None, f"not an audit line: {exc}"))
            continue
        if previous is not None and seq != previous + 1:
            if seq <= previous:
                report.sequence.append((number, f"seq {seq} after {previous}: reordered or "
                                                f"repeated"))
            else:
                missing = f"{previous + 1}" if seq == previous + 2 else \
                    f"{previous + 1}-{seq - 1}"
                report.sequence.append((number, f"gap: seq {missing} missing before seq "
                                                f"{seq}"))
        previous = seq if previous is None or seq > previous else previous
        if line.get("signature") is None:
            report.unsigned.append((number, seq))
            continue
        reason = _check_line(line, registry)
        if reason is None:
            report.signed_ok += 1
        else:
            report.failures.append((number, seq, reason))
    return report


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

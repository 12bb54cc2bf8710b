"""Attacks on the audit trail and on the files commands write, replayed: an exported audit file
edited after the fact (lines removed, renumbered, re-timed, signatures stripped, the checkpoint
edited or dropped, the chain recomputed by someone who knows the format, a later export that
rewrites history), and output paths that are not regular files (a FIFO, /dev/full, a link, a
full disk)."""

from __future__ import annotations

import base64
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import threading

import pytest
from nacl.signing import SigningKey

from conflux.actors import Actor
from conflux.audit import line_digest
from conflux.engine import Engine
from conflux.signing import sign_op

from conftest import EXAMPLE_SCHEMA, run_cli

ZARA = Actor("zara", "human")
BOT = Actor("autoscaler-7", "autoscaler")


def _signed(engine, key, entity, field, value, op_id, **extra):
    op = {"type": "set_field", "entity_id": entity, "field": field, "value": value,
          "env": "production", "op_id": op_id, "hlc": engine.next_hlc(), **extra}
    return sign_op(op, key, "zara-1", "zara")


@pytest.fixture
def project(tmp_path):
    """Eight operations: an unsigned human one from before ``[signatures] require =
    ["human"]``, then signed human ones, an unsigned autoscaler one, a map value and a
    promotion (lines the chain hashes through the canonical encoding's slow path)."""
    d = tmp_path / "p"
    engine = Engine.init(str(d), str(EXAMPLE_SCHEMA))
    key = SigningKey.generate()
    engine.signatures.register("zara-1", "human:zara",
                               base64.b64encode(bytes(key.verify_key)).decode())
    engine.apply([{"type": "set_field", "entity_id": "route.api", "field": "weight",
                   "value": 5}], ZARA)  # seq 1, before signatures were required
    engine.close()
    config = d / ".conflux" / "config.toml"
    config.write_text(config.read_text().replace('# require = ["human", "pipeline"]',
                                                 'require = ["human"]'))
    engine = Engine(str(d))
    for i in range(4):  # seq 2-5
        engine.apply([_signed(engine, key, "route.api", "weight", 10 + i, f"w-{i}")], ZARA)
    engine.apply([{"type": "set_field", "entity_id": "service.a", "field": "replicas",
                   "value": 3, "env": "staging"}], BOT)  # seq 6
    engine.apply([_signed(engine, key, "service.a", "env_vars", {"B": [1, 2.5], "A": None},
                          "m-1")], ZARA)  # seq 7
    engine.promote("staging", "production", ["service.a"], BOT)  # seq 8
    engine.close()
    return str(d), key


def export(capsys, d, path, *extra):
    code, _, err = run_cli(capsys, "--dir", d, "audit", "export", "--output", str(path), *extra)
    assert code == 0, err
    return open(path).read().splitlines(keepends=True)


def verify(capsys, d, lines, tmp_path, *extra):
    """``conflux audit verify`` of these lines: (exit status, the FAIL lines, all output)."""
    path = tmp_path / "checked.jsonl"
    path.write_text("".join(lines))
    code, out, _ = run_cli(capsys, "audit", "verify", str(path), "--key-registry",
                           os.path.join(d, ".conflux", "keys.json"), *extra)
    return code, [x for x in out.splitlines() if x.startswith("FAIL line")], out


def rehashed(lines, start=0):
    """The lines with their chain hashes recomputed from line ``start`` on, by someone who
    knows the format (but not the project's audit key)."""
    out = list(lines[:start])
    prev = bytes.fromhex(json.loads(lines[start - 1])["hash"]) if start else bytes(32)
    for text in lines[start:]:
        line = json.loads(text)
        if "checkpoint" in line:
            out.append(text)
            continue
        line.pop("hash")
        prev = line_digest(line, prev)
        out.append(json.dumps({**line, "hash": prev.hex()}) + "\n")
    return out


def edit(text, **changes):
    line = json.loads(text)
    for key, value in changes.items():
        if value is None:
            line.pop(key)
        else:
            line[key] = value
    return json.dumps(line) + "\n"


# ---------------------------------------------------------------------------------------------
# an untouched export


def test_an_untouched_export_verifies(project, tmp_path, capsys):
    d, _ = project
    lines = export(capsys, d, tmp_path / "audit.jsonl")
    assert len(lines) == 9
    cp = json.loads(lines[-1])["checkpoint"]
    assert (cp["count"], cp["first_seq"], cp["last_seq"], cp["prev_seq"]) == (8, 1, 8, 0)
    assert cp["require"] == {"human": 2}  # the unsigned seq 1 predates the rule
    assert cp["head_hash"] == json.loads(lines[-2])["hash"]
    code, fails, out = verify(capsys, d, lines, tmp_path)
    assert code == 0 and not fails, out
    assert "chain and checkpoint verified: seq 1-8" in out
    key = stat.S_IMODE(os.stat(os.path.join(d, ".conflux", "audit-key.pem")).st_mode)
    assert key == 0o600
    # the hash covers the parsed line, not its spelling: a reformatted file still verifies
    pretty = [json.dumps(json.loads(x), indent=None, separators=(", ", ": ")) + "\n"
              for x in lines]
    assert verify(capsys, d, pretty, tmp_path)[0] == 0


# ---------------------------------------------------------------------------------------------
# item by item: what the old verify passed


def test_first_line_deleted(project, tmp_path, capsys):
    d, _ = project
    lines = export(capsys, d, tmp_path / "audit.jsonl")
    code, fails, _ = verify(capsys, d, lines[1:], tmp_path)
    assert code == 1
    assert "FAIL line 1 (seq 2): the export follows seq 0 (checkpoint), so starts at seq 1: " \
           "seq 1 missing at the start" in fails
    assert any(f.startswith("FAIL line 1 (seq 2): hash mismatch") for f in fails)
    # with the chain recomputed from the new first line, the checkpoint still gives it away
    code, fails, _ = verify(capsys, d, rehashed(lines[1:]), tmp_path)
    assert code == 1 and any("seq 1 missing at the start" in f for f in fails)
    assert any("the head hash is not the last line's" in f for f in fails)


def test_last_line_deleted(project, tmp_path, capsys):
    d, _ = project
    lines = export(capsys, d, tmp_path / "audit.jsonl")
    code, fails, _ = verify(capsys, d, lines[:-2] + lines[-1:], tmp_path)
    assert code == 1
    assert "FAIL line 8: checkpoint: the export ends at seq 8, this file at seq 7: seq 8 " \
           "removed at the end" in fails
    assert "FAIL line 8: checkpoint: the export has 8 lines, this file 7" in fails
    # the last operation line and the checkpoint both removed: no checkpoint at all
    code, fails, _ = verify(capsys, d, lines[:-2], tmp_path)
    assert code == 1 and fails == [
        "FAIL line 8: no checkpoint: the file does not end with the export's signed checkpoint "
        "line (cut short, or lines removed at its end)"]


def test_middle_line_deleted_and_renumbered(project, tmp_path, capsys):
    d, _ = project
    lines = export(capsys, d, tmp_path / "audit.jsonl")
    cut = lines[:3] + lines[4:]  # seq 4 removed
    renumbered = cut[:3] + [edit(x, seq=json.loads(x)["seq"] - 1) for x in cut[3:-1]] + cut[-1:]
    code, fails, _ = verify(capsys, d, renumbered, tmp_path)
    assert code == 1
    # every renumbered line was changed, and says so; the count gives the deletion away
    assert [f for f in fails if "hash mismatch" in f] == [
        f"FAIL line {n} (seq {n}): hash mismatch: the line was changed, or a line before it "
        "removed, added or moved" for n in (4, 5, 6, 7)]
    assert "FAIL line 8: checkpoint: the export has 8 lines, this file 7" in fails
    # renumbered and rehashed: the chain holds, the signed checkpoint does not
    code, fails, _ = verify(capsys, d, rehashed(renumbered, 3), tmp_path)
    assert code == 1 and not any("hash mismatch" in f for f in fails)
    assert "FAIL line 8: checkpoint: the export ends at seq 8, this file at seq 7: seq 8 " \
           "removed at the end" in fails
    # deleted without renumbering: a gap
    code, fails, _ = verify(capsys, d, cut, tmp_path)
    assert code == 1 and "FAIL line 4: gap: seq 4 missing before seq 5" in fails


def test_time_edited(project, tmp_path, capsys):
    d, _ = project
    lines = export(capsys, d, tmp_path / "audit.jsonl")
    forged = list(lines)
    forged[5] = edit(lines[5], time="2024-01-01T00:00:00.000Z")  # seq 6, unsigned
    code, fails, _ = verify(capsys, d, forged, tmp_path)
    assert code == 1
    assert any(f.startswith("FAIL line 6 (seq 6): time '2024-01-01T00:00:00.000Z' is not its "
                            "hlc's time") for f in fails)
    assert any(f.startswith("FAIL line 6 (seq 6): hash mismatch") for f in fails)
    code, fails, _ = verify(capsys, d, rehashed(forged, 5), tmp_path)
    assert code == 1 and any(f.startswith("FAIL line 6 (seq 6): time ") for f in fails)
    assert "FAIL line 9: checkpoint: the head hash is not the last line's: lines removed or " \
           "added at the end, or the chain recomputed" in fails


@pytest.mark.parametrize("stripped", [("signature", "key_id"), ("signature",)])
def test_signature_stripped_from_a_line_the_require_rule_covers(project, tmp_path, capsys,
                                                                stripped):
    d, _ = project
    lines = export(capsys, d, tmp_path / "audit.jsonl")
    forged = list(lines)
    forged[2] = edit(lines[2], **{k: None for k in stripped})  # seq 3, zara's, signed
    for attempt in (forged, rehashed(forged, 2)):
        code, fails, _ = verify(capsys, d, attempt, tmp_path)
        assert code == 1
        assert "FAIL line 3 (seq 3): unsigned, but [signatures] require covers human actors: " \
               "the checkpoint says every human operation from seq 2 on is signed (its " \
               "signature was removed)" in fails


def test_checkpoint_edited_missing_or_signed_by_another_key(project, tmp_path, capsys):
    d, key = project
    lines = export(capsys, d, tmp_path / "audit.jsonl")
    line = json.loads(lines[-1])
    # the require rule dropped, to hide a stripped signature
    hidden = [*lines[:2], edit(lines[2], signature=None, key_id=None), *lines[3:-1],
              json.dumps({**line, "checkpoint": {**line["checkpoint"], "require": {}}}) + "\n"]
    code, fails, _ = verify(capsys, d, rehashed(hidden, 2), tmp_path)
    assert code == 1 and "FAIL line 9: checkpoint: the signature does not match the " \
                         "checkpoint: it was edited, or not made by this project" in fails
    for change in ({"count": 7}, {"last_seq": 7}, {"prev_seq": 1},
                   {"head_hash": "00" * 32}, {"time": "2099-01-01T00:00:00.000Z"}):
        edited = json.dumps({**line, "checkpoint": {**line["checkpoint"], **change}}) + "\n"
        code, fails, _ = verify(capsys, d, lines[:-1] + [edited], tmp_path)
        assert code == 1 and any("FAIL line 9: checkpoint: the signature does not match" in f
                                 for f in fails), change
    code, fails, _ = verify(capsys, d, lines[:-1], tmp_path)
    assert code == 1 and fails[-1].startswith("FAIL line 9: no checkpoint")
    # a checkpoint re-signed with a key of the registry that is not the project's
    from conflux.audit import checkpoint_content

    cp = {**line["checkpoint"], "count": 7, "key_id": "zara-1"}
    resigned = json.dumps({"checkpoint": cp, "signature": base64.b64encode(
        key.sign(checkpoint_content(cp)).signature).decode()}) + "\n"
    code, fails, _ = verify(capsys, d, lines[:-1] + [resigned], tmp_path)
    assert code == 1 and "FAIL line 9: checkpoint: key 'zara-1' belongs to human:zara, not " \
                         "system:conflux-audit: it was edited, or not made by this project" \
                         in fails
    # a line added after the checkpoint
    code, fails, _ = verify(capsys, d, lines + [lines[3]], tmp_path)
    assert code == 1 and fails == ["FAIL line 10: a line after the checkpoint, which ends the "
                                   "export"]
    # a member given twice: parsers that keep the first would read another line
    doubled = lines[3].replace('"seq":4,', '"seq":4,"new":99,')
    code, fails, _ = verify(capsys, d, lines[:3] + [doubled] + lines[4:], tmp_path)
    assert code == 1 and "member 'new' appears twice" in fails[0]


# ---------------------------------------------------------------------------------------------
# exports from --since, and checking that a later export extends an earlier one


def _more(d, key, n, prefix):
    with Engine(d) as engine:
        for i in range(n):
            engine.apply([_signed(engine, key, "route.api", "weight", 50 + i,
                                  f"{prefix}-{i}")], ZARA)


def test_a_later_export_extends_an_earlier_checkpoint(project, tmp_path, capsys):
    d, key = project
    old = export(capsys, d, tmp_path / "old.jsonl")
    (tmp_path / "old-checkpoint.json").write_text(old[-1])
    _more(d, key, 3, "later")
    for since in ("9", "5", "1"):
        new = export(capsys, d, tmp_path / "new.jsonl", "--since", since)
        cp = json.loads(new[-1])["checkpoint"]
        assert cp["prev_seq"] == int(since) - 1 and cp["last_seq"] == 11
        assert cp["since"] == since
        if since == "5":
            assert cp["prev_hash"] == json.loads(old[3])["hash"]  # the full log's line 4
        for held in ("old-checkpoint.json", "old.jsonl"):
            code, fails, out = verify(capsys, d, new, tmp_path, "--extends",
                                      str(tmp_path / held))
            assert code == 0 and not fails, out
    # from the same log, an export ending before the earlier head does not extend it
    short = export(capsys, d, tmp_path / "short.jsonl", "--until", "6")
    code, fails, _ = verify(capsys, d, short, tmp_path, "--extends",
                            str(tmp_path / "old.jsonl"))
    assert code == 1 and fails == ["FAIL line 7: --extends: the earlier checkpoint covers up "
                                   "to seq 8, this export only up to seq 6: it does not extend "
                                   "it"]
    # one that starts after the earlier head cannot show it
    late = export(capsys, d, tmp_path / "late.jsonl", "--since", "10")
    code, fails, _ = verify(capsys, d, late, tmp_path, "--extends",
                            str(tmp_path / "old.jsonl"))
    assert code == 1 and "export with --since 9 or earlier to check it" in fails[0]
    # a forged earlier checkpoint is no reference
    forged = json.loads(old[-1])
    forged["checkpoint"]["head_hash"] = "11" * 32
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    new = export(capsys, d, tmp_path / "new.jsonl")
    code, fails, _ = verify(capsys, d, new, tmp_path, "--extends", str(tmp_path / "forged.json"))
    assert code == 1 and any("the earlier checkpoint: the signature does not match" in f
                             for f in fails)


def test_since_starts_from_the_full_log_s_chain_however_far_in(tmp_path):
    """Past 4,096 lines the chain's hash is kept in the store every 4,096 lines, so that an
    export from --since hashes only the lines since the last one kept: the same hashes."""
    from conflux.audit import chain_hash, export_lines

    engine = Engine.init(str(tmp_path / "long"), str(EXAMPLE_SCHEMA))
    for start in range(0, 9000, 1000):
        engine.apply([{"type": "set_field", "entity_id": f"route.r{i % 50}", "field": "weight",
                       "value": i % 100} for i in range(start, start + 1000)], BOT)
    first = [json.loads(x) for x in export_lines(engine, since=8193)]  # none kept yet
    with engine.store.read() as txn:
        kept = [engine.store.meta_get(txn, f"audit-chain/1:{n}") for n in (4096, 8192)]
    assert all(kept) and kept[1] == bytes.fromhex(first[-1]["checkpoint"]["prev_hash"])
    full = [json.loads(x) for x in export_lines(engine)]
    later = [json.loads(x) for x in export_lines(engine, since=8193)]  # from the kept 8192
    assert first[-1]["checkpoint"]["prev_hash"] == full[8191]["hash"] == \
        later[-1]["checkpoint"]["prev_hash"] == chain_hash(engine, 8192).hex()
    assert [x.get("hash") for x in first[:-1]] == [x["hash"] for x in full[8192:-1]]
    assert full[-1]["checkpoint"]["head_hash"] == later[-1]["checkpoint"]["head_hash"]
    engine.close()


def test_a_later_export_that_rewrote_history_does_not_extend(project, tmp_path, capsys):
    d, key = project
    export(capsys, d, tmp_path / "first.jsonl")  # makes the project's audit key
    twin = str(tmp_path / "twin")
    shutil.copytree(d, twin)  # the same store (node, key) from here on: a restored backup
    _more(d, key, 1, "kept")
    old = export(capsys, d, tmp_path / "old.jsonl")  # the checkpoint a consumer holds: seq 9
    _more(twin, key, 2, "rewritten")  # seq 9 differs
    new = export(capsys, twin, tmp_path / "new.jsonl")
    assert verify(capsys, twin, new, tmp_path)[0] == 0  # consistent by itself
    code, fails, _ = verify(capsys, twin, new, tmp_path, "--extends",
                            str(tmp_path / "old.jsonl"))
    assert code == 1 and len(fails) == 1 and fails[0].startswith(
        "FAIL line 9 (seq 9): --extends: the earlier checkpoint's head is seq 9 with hash "
        f"{json.loads(old[-1])['checkpoint']['head_hash'][:16]}..., this export's line for it "
        "has another: the log up to there was rewritten")
    tail = export(capsys, twin, tmp_path / "tail.jsonl", "--since", "10")
    code, fails, _ = verify(capsys, twin, tail, tmp_path, "--extends",
                            str(tmp_path / "old.jsonl"))
    assert code == 1 and len(fails) == 1 and "this export follows seq 9 with hash" in fails[0]


def test_the_daemon_streams_the_same_chain(project, tmp_path, capsys):
    import requests

    from test_daemon import daemon, key as api_key, make_project

    served = make_project(tmp_path / "served")
    with Engine(served) as engine:
        for i in range(3):
            engine.apply([{"type": "set_field", "entity_id": "route.api", "field": "weight",
                           "value": i}], BOT)
    with daemon(served) as (url, _):
        full = requests.get(f"{url}/v1/audit/export", headers=api_key("zara"))
        assert full.status_code == 200
        since = requests.get(f"{url}/v1/audit/export?since=3", headers=api_key("zara"))
    lines = full.text.splitlines(keepends=True)
    assert verify(capsys, served, lines, tmp_path)[0] == 0
    (tmp_path / "held.jsonl").write_text(full.text)
    tail = since.text.splitlines(keepends=True)
    assert json.loads(tail[-1])["checkpoint"]["prev_hash"] == json.loads(lines[1])["hash"]
    code, fails, out = verify(capsys, served, tail, tmp_path, "--extends",
                              str(tmp_path / "held.jsonl"))
    assert code == 0, out
    code, fails, _ = verify(capsys, served, lines[1:], tmp_path)
    assert code == 1 and "seq 1 missing at the start" in fails[0]


# ---------------------------------------------------------------------------------------------
# where the output goes


def conflux(*args, stdout=subprocess.PIPE, fsize=None, **kwargs):
    """The CLI in a process of its own (with a file size limit: a full disk for files)."""
    limit = None if fsize is None else \
        (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize)))
    return subprocess.run([sys.executable, "-m", "conflux", *args], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, preexec_fn=limit, **kwargs)


def test_export_to_a_fifo_streams_into_it(project, tmp_path, capsys):
    d, _ = project
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo).read()), daemon=True)
    reader.start()
    code, _, err = run_cli(capsys, "--dir", d, "audit", "export", "--output", str(fifo))
    reader.join(30)
    assert code == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # not replaced by a regular file
    assert verify(capsys, d, received[0].splitlines(keepends=True), tmp_path)[0] == 0
    assert not [n for n in os.listdir(tmp_path) if "partial" in n]


def test_export_to_dev_full_fails_in_one_line_and_leaves_it_alone(project, tmp_path):
    d, _ = project
    before = os.stat("/dev/full")
    for command in (["audit", "export"], ["export", "--format", "yaml"]):
        if command[0] == "audit":
            result = conflux("--dir", d, *command, "--output", "/dev/full")
            assert result.returncode == 1, result.stderr
            assert result.stderr == "conflux audit: error: /dev/full: cannot write: No space " \
                                    "left on device\n"
        # standard output on a full device, for both commands
        with open("/dev/full", "wb") as full:
            result = conflux("--dir", d, *command, stdout=full)
        assert result.returncode == 1, result.stderr
        assert result.stderr.endswith("standard output: cannot write: No space left on "
                                      "device\n") and result.stderr.count("\n") == 1
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino
    assert not [n for n in os.listdir("/dev") if "partial" in n]


def test_a_full_disk_keeps_the_old_file_and_leaves_no_partial(project, tmp_path, capsys):
    d, _ = project
    target = tmp_path / "out" / "audit.jsonl"
    target.parent.mkdir()
    target.write_text("the previous export\n")
    os.chmod(target, 0o640)
    run_cli(capsys, "--dir", d, "audit", "export")  # the audit key exists before the limit
    result = conflux("--dir", d, "audit", "export", "--output", str(target), fsize=1000)
    assert result.returncode == 1
    assert result.stderr == f"conflux audit: error: {target}: cannot write: File too large; " \
                            "the file there was left as it was\n"
    assert target.read_text() == "the previous export\n"
    assert os.listdir(target.parent) == ["audit.jsonl"]
    # without the limit it is replaced whole, keeping its mode
    result = conflux("--dir", d, "audit", "export", "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert os.listdir(target.parent) == ["audit.jsonl"]
    assert verify(capsys, d, target.read_text().splitlines(keepends=True), tmp_path)[0] == 0


def test_a_link_to_a_file_is_followed_and_kept(project, tmp_path, capsys):
    d, _ = project
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    export(capsys, d, link)
    assert link.is_symlink() and json.loads(real.read_text().splitlines()[-1])["checkpoint"]


def test_dev_stdout_is_written_in_place(project, tmp_path):
    d, _ = project
    result = conflux("--dir", d, "audit", "export", "--output", "/dev/stdout")
    assert result.returncode == 0 and json.loads(result.stdout.splitlines()[-1])["checkpoint"]
    log = tmp_path / "appended.jsonl"
    log.write_text("kept\n")
    with open(log, "a") as handle:  # the shell's >>: an append stays an append
        assert conflux("--dir", d, "audit", "export", "-o", "/dev/stdout",
                       stdout=handle).returncode == 0
    text = log.read_text().splitlines()
    assert text[0] == "kept" and len(text) == 10


def test_tree_export_replaces_only_regular_files(project, tmp_path, capsys):
    d, _ = project
    out = tmp_path / "tree"
    assert run_cli(capsys, "--dir", d, "export", "--format", "yaml", "--output", str(out),
                   "--env", "production")[0] == 0
    target = out / "production" / "route" / "api.yaml"
    target.unlink()
    os.mkfifo(target)
    code, _, err = run_cli(capsys, "--dir", d, "export", "--format", "yaml", "--output",
                           str(out), "--env", "production")
    assert code == 2 and f"{target} is not a regular file (a FIFO): it is not replaced" in err
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    outside = tmp_path / "outside.txt"
    outside.write_text("not Conflux's\n")
    target.unlink()
    target.symlink_to(outside)
    code, _, err = run_cli(capsys, "--dir", d, "export", "--format", "yaml", "--output",
                           str(out), "--env", "production")
    assert code == 2 and "(a symbolic link): it is not replaced" in err
    assert target.is_symlink() and outside.read_text() == "not Conflux's\n"
    # a full disk: one line, exit 1, the file kept and no temporary file left
    target.unlink()
    target.write_text("name: api\n")
    result = conflux("--dir", d, "export", "--format", "yaml", "--output", str(out),
                     "--env", "production", fsize=5)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "cannot write: File too large" in result.stderr
    assert target.read_text() == "name: api\n"
    assert not [p for p in out.rglob("*") if "partial" in p.name]


def test_a_key_file_on_a_full_disk_is_not_left_truncated(tmp_path):
    pem = tmp_path / "k.pem"
    result = conflux("keys", "generate", "--actor", "zara", "--output", str(pem), fsize=50)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "cannot write: File too large" in result.stderr and not pem.exists()
    result = conflux("keys", "generate", "--actor", "zara", "--output", "/dev/full")
    assert result.returncode == 2 and "never overwritten" in result.stderr

"""The entity tree: concurrent moves converge and never make a cycle (Kleppmann et al. 2021),
on both twins of the core, against the paper's own undo-do-redo algorithm (``tests/model``),
and through the engine: what a move needs, what a removed parent does, every environment
showing one tree, and replicas fed the same moves in any order."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, HealthCheck, settings, strategies as st

from conflux.actors import Actor
from conflux.engine import Engine
from conflux.errors import NotFound, PermissionDenied, ValidationError
from conftest import EXAMPLE_SCHEMA, load_twin, run_cli, set_op, ZARA
from model import MoveTree

TWINS = {name: load_twin(name) for name in ("c", "py")}
NODES = ["n0", "n1", "n2", "n3", "n4", "n5"]


def _op(core, op_id, child, parent, position, hlc, actor):
    op = core.Op()
    op.type, op.kind, op.op_id, op.entity = core.MOVE_ENTITY, core.PLACE, op_id, child
    op.hlc, op.actor = hlc, actor
    op.value = [parent, position]
    op.vbytes = msgpack.packb(op.value, use_bin_type=True)
    return op


moves = st.lists(st.tuples(st.sampled_from(NODES),
                           st.one_of(st.none(), st.sampled_from(NODES)),
                           st.one_of(st.none(), st.integers(-3, 3), st.text("abc", max_size=2)),
                           st.integers(1, 40), st.sampled_from(["a", "b"])),
                 min_size=1, max_size=30)


def _records(core, script, order):
    """The place records after applying the moves of ``script`` in ``order`` (indexes, with
    repeats), one record per entity, merged op by op."""
    records = {}
    for i in order:
        child, parent, position, hlc, actor = script[i]
        op = _op(core, f"m{i}", child, parent, position, hlc, actor)
        records[child] = core.merge_op(records.get(child), op)
    return records


def _no_cycle(placed):
    for start in placed:
        seen, up = {start}, placed[start][0]
        while up is not None:
            assert up not in seen, f"a cycle through {up}"
            seen.add(up)
            up = placed[up][0] if up in placed else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=moves, seed=st.integers(0, 2 ** 32 - 1))
def test_concurrent_moves_converge_on_both_twins_and_never_make_a_cycle(script, seed):
    rng = random.Random(seed)
    orders = []
    for _ in range(3):
        order = list(range(len(script))) + rng.choices(range(len(script)), k=3)  # duplicates
        rng.shuffle(order)
        orders.append(order)
    trees, blobs = [], []
    for core in TWINS.values():
        for order in orders:
            records = _records(core, script, order)
            blobs.append({k: bytes(v) for k, v in records.items()})
            trees.append(core.tree_replay(sorted(records.items())))
    assert all(b == blobs[0] for b in blobs), "the records differ by twin or order"
    assert all(t == trees[0] for t in trees), "the trees differ by twin or order"
    placed, skipped = trees[0]
    _no_cycle(placed)
    # the paper's algorithm, fed the moves as they arrive, reaches the same tree
    for order in orders:
        model = MoveTree()
        for i in order:
            child, parent, position, hlc, actor = script[i]
            model.apply((hlc, actor.encode(), f"m{i}".encode()), child, parent, position)
        assert {c: p for c, (p, _, _, _) in placed.items()} == \
            {c: p for c, (p, _) in model.parent.items()}
        assert {c: pos for c, (_, pos, _, _) in placed.items()} == \
            {c: pos for c, (_, pos) in model.parent.items()}
    # a skipped move is one that would have put an entity under itself
    for i, (child, parent, *_rest) in enumerate(script):
        if f"m{i}" in skipped:
            assert parent is not None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=moves, seed=st.integers(0, 2 ** 32 - 1))
def test_joining_place_records_is_merging_their_moves(script, seed):
    """Two replicas that applied parts of the moves, joined, hold what one replica that
    applied all of them holds: the join is the merge's least upper bound."""
    rng = random.Random(seed)
    for core in TWINS.values():
        everything = _records(core, script, range(len(script)))
        left = [i for i in range(len(script)) if rng.random() < 0.6]
        right = [i for i in range(len(script)) if i not in left or rng.random() < 0.3]
        a, b = _records(core, script, left), _records(core, script, right)
        joined = {k: core.join(a.get(k), b.get(k)) for k in set(a) | set(b)}
        assert joined == everything
        assert core.join(joined[script[0][0]], joined[script[0][0]]) == joined[script[0][0]]


def test_the_classic_concurrent_moves_skip_the_later_one():
    """The paper's example: A under B and, concurrently, B under A. Whatever the order they
    arrive in, the later move is skipped and no cycle is made."""
    for core in TWINS.values():
        for order in ([0, 1], [1, 0]):
            script = [("A", "B", None, 10, "x"), ("B", "A", None, 11, "y")]
            placed, skipped = core.tree_replay(_records(core, script, order).items())
            assert placed == {"A": ("B", None, 10, "m0")} and skipped == {"m1"}


def test_damaged_place_records_fail_alike_on_both_twins():
    good = TWINS["py"].merge_op(None, _op(TWINS["py"], "m1", "A", "B", "a", 5, "x"))
    for cut in (3, 9, 20):
        errors = set()
        for core in TWINS.values():
            with pytest.raises(Exception) as caught:
                core.tree_replay([("A", good[:cut])])
            errors.add(type(caught.value).__name__)
        assert len(errors) == 1, errors


# -- through the engine -------------------------------------------------------------------------
def _dir_schema(tmp_path):
    schema = tmp_path / "dirs.toml"
    schema.write_text('name = "t"\nversion = "1"\n[environments]\nbase = "prod"\n'
                      '[entity.dir]\nfields = [{ name = "mode", type = "int", merge = "lww", '
                      'required = true }]\n[entity.dir.children]\nsubdirs = { type = "dir" }\n'
                      '[entity.link]\nfields = [{ name = "to", type = "ref<dir>", '
                      'merge = "lww" }]\n')
    return str(schema)


def move(entity, parent=None, position=None, **extra):
    return {"type": "move_entity", "entity_id": entity, "parent": parent,
            "position": position, **extra}


def test_a_move_places_an_entity_and_what_it_needs_is_checked(engine):
    engine.apply([set_op("service.shop", "image", "x"), move("route.b", "service.shop", "b"),
                  move("route.a", "service.shop", 1)], ZARA)
    assert engine.place("service.shop")["children"] == ["route.a", "route.b"]
    assert engine.place("route.b") == {"parent": "service.shop", "position": "b",
                                       "children": []}
    # route.b exists by its place alone: no field of its own, its defaults shown
    assert engine.get("route.b") == {}
    last = engine.last_seq()
    for op, words in [(move("service.shop", "route.a"), "declares no children"),
                      (move("route.a", "service.nowhere"), "does not exist"),
                      (move("route.a", "route.a"), "its own parent"),
                      (move("route.a", "service.shop", 1.5), "position"),
                      (move("route.a", "service.shop", env="staging"), "base environment"),
                      (move("route.a", "service.shop", override=True), "override"),
                      ({**move("route.a", "service.shop"), "field": "path"}, "takes no field"),
                      (set_op("route.a", "path", "/a", parent="service.shop"), "move_entity")]:
        with pytest.raises(ValidationError, match=words):
            engine.apply([op], ZARA)
    assert engine.last_seq() == last  # nothing was written


def test_a_move_that_would_make_a_cycle_is_refused_where_it_is_accepted(tmp_path, core):
    schema = _dir_schema(tmp_path)
    eng = Engine.init(str(tmp_path / "p"), schema, core=core)
    try:
        eng.apply([move("dir.a"), move("dir.b", "dir.a"), move("dir.c", "dir.b")], ZARA)
        last = eng.last_seq()
        with pytest.raises(ValidationError, match="make a cycle"):
            eng.apply([move("dir.a", "dir.c")], ZARA)
        with pytest.raises(ValidationError, match="make a cycle"):  # within one batch too
            eng.apply([move("dir.d", "dir.c"), move("dir.c", "dir.d")], ZARA)
        assert eng.last_seq() == last
        assert eng.tree()["roots"] == ["dir.a"]
        # moving a subtree moves what is under it
        eng.apply([move("dir.x"), move("dir.b", "dir.x")], ZARA)
        assert eng.place("dir.c")["parent"] == "dir.b"
        assert eng.place("dir.x")["children"] == ["dir.b"]
    finally:
        eng.close()


def test_a_removed_parent_hands_its_children_up_until_it_comes_back(engine):
    engine.apply([set_op("service.shop", "image", "x"), move("service.shop"),
                  move("route.a", "service.shop", "a"), set_op("route.a", "path", "/a")], ZARA)
    engine.apply([{"type": "delete_entity", "entity_id": "service.shop"}], ZARA)
    assert engine.place("route.a")["parent"] is None  # its children are not removed
    assert engine.get("route.a")["path"]["value"] == "/a"
    assert "service.shop" not in engine.tree()["entities"]
    with pytest.raises(NotFound):
        engine.place("service.shop")
    engine.apply([set_op("service.shop", "image", "y")], ZARA)  # written again: it is back
    assert engine.place("route.a")["parent"] == "service.shop"
    # an environment shows the base's tree, less what it removed itself
    engine.apply([{"type": "delete_entity", "entity_id": "service.shop", "env": "staging"}],
                 ZARA)
    assert engine.place("route.a", "staging")["parent"] is None
    assert engine.place("route.a", "development")["parent"] is None
    assert engine.place("route.a", "production")["parent"] == "service.shop"


def test_moves_are_logged_and_shown_in_dry_runs_and_the_state_hash(engine):
    engine.apply([set_op("service.shop", "image", "x"), move("route.a", "service.shop", "a")],
                 ZARA)
    before = engine.state_hash()
    acks = engine.apply([move("route.a", None, "z", intent="detach")], ZARA, dry_run=True)
    assert acks[0].change["before"] == {"parent": "service.shop", "position": "a"}
    assert acks[0].change["after"] == {"parent": None, "position": "z"}
    assert engine.state_hash() == before
    engine.apply([move("route.a", None, "z", intent="detach")], ZARA)
    assert engine.state_hash() != before
    op = engine.log(limit=1)[0]
    assert engine.describe(op) == "route.a placed as a root at 'z'"
    shown = engine.op_dict(op)
    assert (shown["parent"], shown["position"], shown["previous"]) == (
        None, "z", {"parent": "service.shop", "position": "a"})


def test_replicas_fed_the_same_moves_in_any_order_hold_the_same_tree(tmp_path, core):
    """Client-stamped moves, concurrent and conflicting, applied to three stores in three
    orders (and once more, duplicated): the same records, the same tree, no cycle."""
    schema = _dir_schema(tmp_path)
    origin = Engine.init(str(tmp_path / "origin"), schema, core=core)
    from conflux.engine.settings import now_ms

    base = (now_ms() - 60_000) << 16
    ops = [move("dir.a", hlc=base + 1, op_id="c-1"), move("dir.b", hlc=base + 2, op_id="c-2"),
           set_op("dir.a", "mode", 1, hlc=base + 3, op_id="c-3")]
    origin.apply(ops, ZARA)
    # two writers, each with what the origin had, move a and b under each other
    a_under_b = move("dir.a", "dir.b", hlc=base + 10, op_id="w1-1")
    b_under_a = move("dir.b", "dir.a", hlc=base + 11, op_id="w2-1")
    entries = []
    for i, op in enumerate([a_under_b, b_under_a]):
        writer = Engine.init(str(tmp_path / f"w{i}"), schema, core=core)
        writer.apply_entries([e for _, e in origin.entries()])
        writer.apply([op], ZARA)
        entries += [e for seq, e in writer.entries() if seq > 3]
        writer.close()
    everything = [e for _, e in origin.entries()] + entries
    stores = []
    for i in range(3):
        rng = random.Random(i)
        order = everything[:] + ([everything[-1]] if i == 2 else [])
        rng.shuffle(order)
        replica = Engine.init(str(tmp_path / f"r{i}"), schema, core=core)
        replica.apply_entries(order)
        stores.append(replica)
    try:
        first = stores[0]
        for other in stores[1:]:
            assert other.records() == first.records()
            assert other.tree() == first.tree()
            assert other.state_hash() == first.state_hash()
        # the earlier move (a under b) holds; the later one is skipped: b stays a root
        assert first.place("dir.a")["parent"] == "dir.b"
        assert first.place("dir.b")["parent"] is None
    finally:
        for store in stores:
            store.close()
        origin.close()


def test_moving_needs_write_on_the_entity_and_on_its_new_parent(tmp_path, core):
    root = tmp_path / "p"
    eng = Engine.init(str(root), str(EXAMPLE_SCHEMA), core=core)
    eng.apply([set_op("service.shop", "image", "x"), set_op("service.own", "image", "y")],
              ZARA)
    (root / ".conflux" / "rbac.toml").write_text(
        '[role.routes]\npermissions = [{ actions = ["write", "read"], resource = "route.*" }]\n'
        '[role.own]\npermissions = [{ actions = ["write"], resource = "service.own" }]\n'
        '[[assign]]\nactor = "human:zara"\nroles = ["routes", "own"]\n')
    eng.close()
    eng = Engine(str(root), core=core)
    try:
        with pytest.raises(PermissionDenied, match="service.shop"):
            eng.apply([move("route.a", "service.shop")], ZARA)
        eng.apply([move("route.a", "service.own")], ZARA)
        assert eng.place("route.a")["parent"] == "service.own"
    finally:
        eng.close()


@pytest.fixture
def shop(tmp_path, capsys, monkeypatch):
    """A project with service.shop, the command line run from it."""
    project = tmp_path / "p"
    Engine.init(str(project), str(EXAMPLE_SCHEMA)).close()
    monkeypatch.chdir(project)
    assert run_cli(capsys, "set", "service.shop", "image", "x")[0] == 0
    return project


def test_the_cli_moves_and_shows_the_tree(shop, capsys):
    code, out, err = run_cli(capsys, "move", "route.b", "service.shop", "--position", "b")
    assert code == 0 and "route.b under service.shop at 'b'" in out, err
    assert run_cli(capsys, "move", "route.a", "service.shop", "--position", "7")[0] == 0
    code, out, _ = run_cli(capsys, "tree")
    assert out.splitlines() == ["service.shop", "  route.a  @7", "  route.b  @b"]
    code, out, _ = run_cli(capsys, "tree", "-o", "json")
    assert '"position": 7' in out and '"parent": "service.shop"' in out
    for args, words in [(("move", "route.a"), "--root"),
                        (("move", "route.a", "service.shop", "--root"), "not both"),
                        (("move", "service.shop", "route.a"), "declares no children"),
                        (("tree", "route.zzz"), "does not exist")]:
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert run_cli(capsys, "move", "route.a", "--root")[0] == 0
    assert run_cli(capsys, "tree")[1].splitlines()[0] == "route.a"  # a root, no position


def test_what_a_reader_may_not_read_is_never_named(tmp_path, core):
    root = tmp_path / "p"
    eng = Engine.init(str(root), _dir_schema(tmp_path), core=core)
    eng.apply([move("dir.secret"), move("dir.mid", "dir.secret"), move("dir.a", "dir.mid")],
              ZARA)
    eng.close()
    (root / ".conflux" / "rbac.toml").write_text(
        '[role.some]\npermissions = [{ actions = ["read", "write"], resource = "dir.a" },\n'
        '  { actions = ["read"], resource = "dir.mid" }]\n'
        '[role.admin]\npermissions = [{ actions = ["admin"], resource = "*" }]\n'
        '[[assign]]\nactor = "pipeline:m"\nroles = ["some"]\n'
        '[[assign]]\nactor = "human:*"\nroles = ["admin"]\n')
    eng = Engine(str(root), core=core)
    m = Actor("m", "pipeline")
    try:
        # dir.mid is readable: a's parent; dir.secret is not: mid shows as a root
        assert eng.place("dir.a", reader=m)["parent"] == "dir.mid"
        assert eng.place("dir.mid", reader=m)["parent"] is None
        tree = eng.tree(reader=m)
        assert "dir.secret" not in str(tree) and tree["roots"] == ["dir.mid"]
        # a move naming an unreadable parent is not in the reader's watch feed
        eng.apply([move("dir.a", "dir.secret")], ZARA)
        keep = eng.feed_filter(entity="dir.a", reader=m)
        assert not keep(eng.log(limit=1)[0])
        assert eng.place("dir.a", reader=m)["parent"] is None
        assert eng.tree()["entities"]["dir.a"]["parent"] == "dir.secret"
        # moving it away from dir.secret needs write there too: its children change
        with pytest.raises(PermissionDenied, match="dir.secret"):
            eng.apply([move("dir.a")], m)
    finally:
        eng.close()


def test_a_move_logs_the_place_in_force_and_answers_what_it_did(tmp_path, core):
    from conflux.engine.settings import now_ms

    eng = Engine.init(str(tmp_path / "p"), _dir_schema(tmp_path), core=core)
    try:
        eng.apply([move("dir.a"), move("dir.b", "dir.a", "x")], ZARA)
        # a backdated move of a under b is skipped by the tree (b is under a)...
        base = (now_ms() - 60_000) << 16
        eng.apply([move("dir.x", hlc=base)], ZARA)
        # ...and what a move replaces is the place in force, not the latest move asked
        acks = eng.apply([move("dir.b", None, "y")], ZARA, dry_run=True)
        assert acks[0].change["before"] == {"parent": "dir.a", "position": "x"}
        # a move stamped before the entity's delete is hidden: answered not applied
        eng.apply([{"type": "delete_entity", "entity_id": "dir.x"}], ZARA)
        acks = eng.apply([move("dir.x", None, "z", hlc=base + 5)], ZARA)
        assert acks[0].applied is False
        with pytest.raises(NotFound):
            eng.place("dir.x")
        # an entity made by a move alone: its required field is a violation, a ref to it
        # is not dangling, and its blame is empty, not missing
        eng.apply([{"type": "set_field", "entity_id": "link.l", "field": "to",
                    "value": "dir.bare"}], ZARA)
        assert any(v["entity_id"] == "link.l" for v in eng.violations())
        eng.apply([move("dir.bare")], ZARA)
        found = {(v["entity_id"], v["field"]) for v in eng.violations()}
        assert ("dir.bare", "mode") in found and ("link.l", "to") not in found
        assert eng.blame("dir.bare") == {}
        assert eng.matching("dir.*") == sorted(["dir.a", "dir.b", "dir.bare"])
    finally:
        eng.close()


def test_the_cli_keeps_text_positions_as_text(shop, capsys):
    for text, kept in (("007", "007"), ("²", "²"), ("--5", "--5"), ("-5", -5), ("0", 0)):
        code, out, err = run_cli(capsys, "move", "route.a", "service.shop",
                                 f"--position={text}")
        assert code == 0, err
        eng = Engine(str(shop))
        assert eng.place("route.a")["position"] == kept
        eng.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from(["dir.a", "dir.b", "dir.c", "dir.d"]),
                                st.one_of(st.none(), st.sampled_from(["dir.a", "dir.b",
                                                                      "dir.c", "dir.d"])),
                                st.booleans(), st.integers(1, 50)), min_size=1, max_size=12))
def test_the_kept_tree_brought_up_to_date_is_the_replayed_tree(tmp_path_factory, steps):
    """Moves applied after the kept tree (newer than all of its moves) and moves that make
    the tree be replayed (backdated): an engine that keeps its tree and one that always
    replays it take and refuse the same moves and show the same tree, which is the tree a
    fresh engine replays from the records."""
    from conflux.engine.settings import now_ms

    root = tmp_path_factory.mktemp("kept")
    schema = _dir_schema(root)
    kept = Engine.init(str(root / "kept"), schema, core=TWINS["c"])
    slow = Engine.init(str(root / "slow"), schema, core=TWINS["c"])
    slow._after = lambda *args: None  # always the whole replay
    base = (now_ms() - 120_000) << 16
    try:
        for eng in (kept, slow):
            eng.apply([move(d) for d in ("dir.a", "dir.b", "dir.c", "dir.d")], ZARA)
        for child, parent, backdated, offset in steps:
            outcomes = []
            for eng in (kept, slow):
                op = move(child, parent, hlc=base + offset) if backdated else \
                    move(child, parent)
                try:
                    outcomes.append(eng.apply([op], ZARA)[0].applied)
                except ValidationError as exc:
                    outcomes.append(str(exc))
            assert outcomes[0] == outcomes[1]
            assert kept.tree() == slow.tree()
        # what was kept and brought up to date is what the records replay to
        with kept.store.read() as txn:
            assert kept._placed(txn) == kept._replay(txn)[0]
    finally:
        kept.close()
        slow.close()

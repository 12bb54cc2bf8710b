"""Webhook deliveries and scheduled milestones once across a cluster: three real daemons on one
shared op log (real PostgreSQL), writes spread over all of them, a loopback receiver; the
daemon holding a lease is killed with SIGKILL mid-burst and another takes over, with no
operation skipped, the one batch in flight sent again under its delivery id, and no milestone
made twice."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import signal
import subprocess
import threading

import psycopg
import pytest
import requests

from test_cluster import _share, _url
from test_daemon import daemon, key, make_project, op, wait_until
from test_webhooks import hook, receivers, write_hooks  # noqa: F401 (a fixture)


def _status(url) -> dict:
    r = requests.get(f"{url}/v1/status", headers=key("zara"), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _holder(url, role) -> str | None:
    held = _status(url)["shared_log"].get("leases", {}).get(role)
    return held and held["node"]


def _logged(dsn) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT op_id FROM conflux_log ORDER BY txid, pos")]


def _writer(urls, prefix, count, alive):
    """Write ``count`` ops, three per request, to the daemons in turn (skipping dead ones);
    the op ids acknowledged."""
    acked = []
    turn = itertools.cycle(range(len(urls)))
    for n in range(0, count, 3):
        batch = [op(f"service.s{(n + i) % 7}", "replicas", (n + i) % 500,
                    op_id=f"{prefix}-{n + i}")
                 for i in range(3)]
        for _ in range(len(urls)):
            i = next(turn)
            if not alive[i]:
                continue
            try:
                r = requests.post(f"{urls[i]}/v1/ops", json={"ops": batch},
                                  headers=key("zara"), timeout=10)
            except requests.ConnectionError:
                continue
            if r.status_code == 200:
                acked += [o["op_id"] for o in batch]
                break
    return acked


@contextlib.contextmanager
def _cluster(tmp_path, postgres, pg_dsn, configure):
    shared_url = _url(postgres, pg_dsn)
    projects = []
    for name in "abc":
        project = make_project(tmp_path / name)
        _share(project, shared_url)
        configure(os.path.join(project, ".conflux"))
        projects.append(project)
    with contextlib.ExitStack() as stack:
        # each daemon in a session of its own: killing one kills its whole process group
        running = [stack.enter_context(daemon(p, "--workers", "1", session=True))
                   for p in projects]
        yield [url for url, _ in running], [proc for _, proc in running], projects


def _logs(procs) -> str:
    """What the daemons still running printed so far (for a failed assertion)."""
    out = []
    for proc in procs:
        if proc.poll() is None:
            os.set_blocking(proc.stdout.fileno(), False)
            out.append((proc.stdout.read() or b"").decode(errors="replace"))
    return "\n----\n".join(out)


def _kill(proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_webhooks_are_delivered_once_across_the_cluster_and_survive_the_holders_death(
        tmp_path, postgres, pg_dsn, receivers):  # noqa: F811
    rx = receivers()
    text = hook("all", rx.url, batch_size=5, backoff_s=0.05, max_backoff_s=0.2)
    with _cluster(tmp_path, postgres, pg_dsn, lambda root: write_hooks(root, text)) as (
            urls, procs, _):
        nodes = [_status(url)["shared_log"]["node"] for url in urls]
        alive = [True] * 3
        acked = _writer(urls, "calm", 60, alive)
        assert len(acked) == 60
        assert rx.wait_for(lambda x: {o["op_id"] for o in x.ops()} >= set(acked), 30), \
            len(rx.ops())
        # nobody died: every op once, in batches of at most 5, each under an id of its own
        delivered = [o["op_id"] for o in rx.ops()]
        assert collections.Counter(delivered).most_common(1)[0][1] == 1
        assert set(delivered) == set(acked)
        ids = [headers["X-Conflux-Delivery"] for headers, _, _ in rx.requests]
        assert len(ids) == len(set(ids)) and all(len(b["ops"]) <= 5 for b in rx.delivered)
        holder = wait_until(lambda: _holder(urls[0], "webhooks"))
        assert holder in nodes
        assert all(_holder(url, "webhooks") == holder for url in urls)
        victim = nodes.index(holder)

        # the holder dies (SIGKILL, its whole process group) while the receiver holds a
        # batch it sent, unanswered, and writes go on to every daemon
        killed = threading.Event()
        in_flight = []
        once = threading.Lock()

        def kill_the_sender():
            # the receiver serves each request on a thread of its own: the next holder's
            # resend may arrive while the kill is under way, and must not count as a kill
            with once:
                if killed.is_set():
                    return
                in_flight.append(rx.requests[-1][0]["X-Conflux-Delivery"])
                alive[victim] = False
                _kill(procs[victim])
                killed.set()
        rx.on_request = kill_the_sender
        burst = []
        writer = threading.Thread(target=lambda: burst.extend(_writer(urls, "burst", 240,
                                                                      alive)))
        writer.start()
        writer.join(60)
        assert not writer.is_alive()
        assert killed.wait(20), "the holder sent nothing to kill it on"
        rx.on_request = None
        logged = _logged(pg_dsn)
        assert set(burst) <= set(logged)
        survivor = urls[(victim + 1) % 3]
        assert rx.wait_for(lambda x: {o["op_id"] for o in x.ops()} >= set(logged), 40), \
            sorted(set(logged) - {o["op_id"] for o in rx.ops()})[:10]

        # no gap: every op the log holds reached the receiver; the only op sent twice are
        # those of the batch in flight at the kill, sent again whole under the same id
        assert {o["op_id"] for o in rx.ops()} == set(logged)
        by_id = collections.defaultdict(list)
        for headers, body, _ in rx.requests:
            by_id[headers["X-Conflux-Delivery"]].append(
                [o["op_id"] for o in json.loads(body)["ops"]])
        again = {d: bodies for d, bodies in by_id.items() if len(bodies) > 1}
        assert list(again) == in_flight, again
        first, second = again[in_flight[0]]
        assert first == second
        counts = collections.Counter(o["op_id"] for o in rx.ops())
        assert {op_id for op_id, n in counts.items() if n > 1} == set(first)
        assert max(counts.values()) == 2
        # dropping repeated delivery ids leaves every op exactly once
        once = [op_id for bodies in by_id.values() for op_id in bodies[0]]
        assert sorted(once) == sorted(logged)

        # another daemon holds the lease now, and every one left says so
        new_holder = wait_until(lambda: _holder(survivor, "webhooks"))
        assert new_holder in nodes and new_holder != holder
        # the cursor, moved just after the receiver's answer, reaches the end of the log
        assert wait_until(lambda: (lambda h: h["pending"] == 0 and h["sending"] is None)(
            _status(survivor)["webhooks"]["all"]))


def _git(repo, *args) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True,
                          capture_output=True, text=True, timeout=30).stdout


def _milestones(dsn) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, node, txid, pos, commit, "
                            "(SELECT count(*) FROM conflux_log AS l WHERE (l.txid, l.pos) <= "
                            "(m.txid::text::xid8, m.pos)) FROM conflux_milestones AS m "
                            "ORDER BY id").fetchall()


def _remote_numbers(remote, dsn) -> list:
    """The cluster's number of each commit on the remote's branch, newest first (the commit
    itself for one the cluster does not record)."""
    commits = {m[4]: m[0] for m in _milestones(dsn)}
    return [commits.get(c, c) for c in _git(remote, "rev-list", "main").split()]


def _check_milestones(dsn, projects, nodes, killed=None) -> list[tuple]:
    """The cluster's milestones: numbered 1, 2, ... with no gap, each at a later position,
    each listing exactly the operations between its position and the previous one's, each in
    its maker's store and repository, but for the last one the ``killed`` daemon made: it may
    have died between the cluster's record and its own (the commit is in its repository)."""
    from conflux.engine import Engine
    from conflux.milestones import Milestone, Milestones

    made = _milestones(dsn)
    assert [m[0] for m in made] == list(range(1, len(made) + 1))
    assert all((a[2], a[3]) < (b[2], b[3]) for a, b in zip(made, made[1:]))
    covered = [m[5] for m in made]
    last_of_killed = max((m[0] for m in made if m[1] == killed), default=None)
    for m, before in zip(made, [0] + covered):
        with psycopg.connect(dsn) as conn:
            record = Milestone.unpack(bytes(conn.execute(
                "SELECT record FROM conflux_milestones WHERE id = %s", (m[0],)).fetchone()[0]))
        assert record.id == m[0] and record.commit == m[4]
        assert record.operations == m[5] - before, (m, before)
        engine = Engine(projects[nodes.index(m[1])])
        try:
            milestones = Milestones(engine)
            assert m[4] in milestones.repo
            if m[0] != last_of_killed:
                assert milestones.get(m[0]).commit == m[4]
        finally:
            engine.close()
    return made


def test_scheduled_milestones_are_made_once_across_the_cluster_and_carry_on_after_the_holder(
        tmp_path, postgres, pg_dsn):
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)

    def configure(root):
        with open(os.path.join(root, "config.toml"), "a") as fh:
            fh.write(f'\n[milestones]\nevery_ops = 12\nremote = "{remote}"\n')

    with _cluster(tmp_path, postgres, pg_dsn, configure) as (urls, procs, projects):
        nodes = [_status(url)["shared_log"]["node"] for url in urls]
        alive = [True] * 3
        for round in (1, 2):
            assert len(_writer(urls, f"calm{round}", 24, alive)) == 24
            assert wait_until(lambda: len(_milestones(pg_dsn)) >= round, 30), \
                _logs(procs)
        holder = _holder(urls[0], "milestones")
        made = _check_milestones(pg_dsn, projects, nodes)
        assert {m[1] for m in made} == {holder}  # one daemon made them all
        for url, node in zip(urls, nodes):  # and only it has them
            listed = requests.get(f"{url}/v1/milestones", headers=key("zara"),
                                  timeout=10).json()["milestones"]
            assert bool(listed) == (node == holder)
        # every daemon's status shows the cluster's last milestone
        assert wait_until(lambda: all(_status(url)["last_milestone"]
                                      and _status(url)["last_milestone"]["node"] == holder
                                      for url in urls))

        victim = nodes.index(holder)
        before = len(made)
        writer = threading.Thread(target=_writer, args=(urls, "burst", 120, alive))
        writer.start()
        assert wait_until(lambda: len(_milestones(pg_dsn)) > before, 30)
        alive[victim] = False
        _kill(procs[victim])
        killed_at = len(_milestones(pg_dsn))  # the lease passes on a second later at best
        writer.join(60)
        assert not writer.is_alive()
        survivor = urls[(victim + 1) % 3]
        # another daemon takes the schedule over and carries on after the last milestone
        # with what was and is written next
        assert len(_writer(urls, "later", 24, alive)) == 24
        assert wait_until(lambda: len(_milestones(pg_dsn)) > killed_at, 30), _logs(procs)
        taken_over = len(_milestones(pg_dsn))
        assert len(_writer(urls, "last", 24, alive)) == 24
        assert wait_until(lambda: len(_milestones(pg_dsn)) > taken_over, 30), _logs(procs)
        made = _check_milestones(pg_dsn, projects, nodes, killed=holder)
        successor = _holder(survivor, "milestones")
        assert successor not in (None, holder)
        # the dead holder's last one is the successor's when it never reached the remote
        # (the successor made it again in its place)
        assert {m[1] for m in made[:killed_at - 1]} == {holder}
        assert made[killed_at - 1][1] in (holder, successor)
        assert {m[1] for m in made[killed_at:]} == {successor}
        # the remote's branch is the cluster's history: every milestone once, no gap, and
        # no commit the cluster does not record
        assert wait_until(lambda: _git(remote, "rev-parse", "main").strip()
                          == _milestones(pg_dsn)[-1][4])
        assert _remote_numbers(remote, pg_dsn) == list(range(len(made), 0, -1))


def _node(tmp_path, name, url, remote=None):
    from conflux.engine import Engine
    from conftest import EXAMPLE_SCHEMA

    directory = str(tmp_path / name)
    Engine.init(directory, str(EXAMPLE_SCHEMA), sync=False).close()
    with open(os.path.join(directory, ".conflux", "config.toml"), "a") as fh:
        fh.write(f'\n[store]\nurl = "{url}"\n\n[milestones]\nevery_ops = 3\n')
        if remote:
            fh.write(f'remote = "{remote}"\n')
    return Engine(directory, sync=False)


def _write(engines, tag, count=3):
    """``count`` ops on the first of ``engines``; then every one applies the shared log."""
    from conflux.actors import Actor

    engines[0].apply([op(f"service.s{n}", "replicas", n, op_id=f"{tag}-{n}")
                      for n in range(count)], Actor("zara", "human"))
    for engine in engines:
        engine.catch_up_from(engine.store.shared_log())


def _take(pg_dsn, engine):
    from conflux.store.lease import Lease

    lease = Lease(pg_dsn, "milestones", engine.node)
    assert lease.try_acquire()
    return lease


def test_a_scheduled_milestone_that_never_reached_the_remote_is_made_again_in_its_place(
        tmp_path, postgres, pg_dsn):
    """The crash window between the cluster's record of a milestone and its push, made
    deterministic: the holder records milestone 2 (in PostgreSQL, its store and its branch)
    and gives up its lease without pushing, as if killed there."""
    from conflux.errors import StoreError
    from conflux.milestones import Milestone, Milestones

    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    url = _url(postgres, pg_dsn)
    a, b = _node(tmp_path, "a", url, remote), _node(tmp_path, "b", url, remote)
    try:
        lease = _take(pg_dsn, a)
        _write([a, b], "one")
        first = Milestones(a).create_if_due_shared(lease)
        assert first.id == 1 and Milestones(a).push()
        _write([a, b], "two")
        lost = Milestones(a).create_if_due_shared(lease)
        assert lost.id == 2
        lease.close()  # a dies before its push
        _write([b, a], "more")  # and writes go on
        assert _git(remote, "rev-parse", "main").strip() == first.commit
        assert [m[0] for m in _milestones(pg_dsn)] == [1, 2]

        lease = _take(pg_dsn, b)
        milestones = Milestones(b)
        # while the remote cannot be fetched, whether milestone 2 reached it is unknown:
        # nothing is made or recorded
        os.rename(remote, f"{remote}.away")
        with pytest.raises(StoreError, match="fetch from"):
            milestones.create_if_due_shared(lease)
        os.rename(f"{remote}.away", remote)
        assert [(m[0], m[4]) for m in _milestones(pg_dsn)] == [(1, first.commit),
                                                               (2, lost.commit)]

        # milestone 2 is made again in its place, on milestone 1, with the operations since
        # milestone 1
        again = milestones.create_if_due_shared(lease)
        assert again.id == 2 and again.commit != lost.commit
        assert [(m[0], m[1], m[4]) for m in _milestones(pg_dsn)] == [
            (1, a.node, first.commit), (2, b.node, again.commit)]
        assert milestones.repo[again.commit].parent_ids == [milestones.repo[first.commit].id]
        assert lost.operations == 3 and again.operations == 6
        with psycopg.connect(pg_dsn) as conn:
            record = Milestone.unpack(bytes(conn.execute(
                "SELECT record FROM conflux_milestones WHERE id = 2").fetchone()[0]))
        assert record.commit == again.commit
        milestones.push()
        assert _remote_numbers(remote, pg_dsn) == [2, 1]
        # made again once: the next tick has nothing to do
        assert milestones.create_if_due_shared(lease) is None
        lease.close()

        # a comes back holding its own milestone 2 in its store and on its branch; once it
        # holds the lease again, its next milestone is 3, on the cluster's 2, and its own 2
        # never reaches the remote
        _write([b, a], "three")
        lease = _take(pg_dsn, a)
        milestones = Milestones(a)
        assert milestones.last().commit == lost.commit
        third = milestones.create_if_due_shared(lease)
        assert third.id == 3
        assert milestones.repo[third.commit].parent_ids == [milestones.repo[again.commit].id]
        milestones.push()
        assert _remote_numbers(remote, pg_dsn) == [3, 2, 1]
        assert lost.commit not in _git(remote, "rev-list", "main").split()
        lease.close()
    finally:
        a.close()
        b.close()


def test_without_a_remote_another_holders_milestone_is_not_made_again(
        tmp_path, postgres, pg_dsn):
    """Without a remote every holder's repository is its own: the next holder lacking the
    last milestone's commit is the rule, not a sign that it was lost."""
    from conflux.milestones import Milestones

    url = _url(postgres, pg_dsn)
    a, b = _node(tmp_path, "a", url), _node(tmp_path, "b", url)
    try:
        lease = _take(pg_dsn, a)
        _write([a, b], "one")
        first = Milestones(a).create_if_due_shared(lease)
        lease.close()
        lease = _take(pg_dsn, b)
        assert Milestones(b).create_if_due_shared(lease) is None
        _write([b, a], "two")
        second = Milestones(b).create_if_due_shared(lease)
        assert second.id == 2
        assert [(m[0], m[4]) for m in _milestones(pg_dsn)] == [(1, first.commit),
                                                               (2, second.commit)]
        lease.close()
    finally:
        a.close()
        b.close()

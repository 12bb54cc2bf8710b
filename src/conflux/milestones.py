"""Milestones: the resolved state projected to git as readable commits.

A milestone commits the resolved state of the chosen environments to the milestone
repository (``<env>/<type>/<name>.<ext>``, the format of ``config.toml``, YAML by default) with
a message naming every operation since the last milestone (docs/concepts.md), and records the last
op-log sequence number it covers.

It is incremental: only the entities that operations touched since the previous milestone
(in an environment or in one it inherits from) are serialised again; every other file and
directory is the previous milestone's git object, reused by id. So its cost grows with what
changed, not with the state.

Crash safety: git objects are written (and synced) first, then the milestone is recorded in
the store (one synced LMDB transaction), then the branch is moved. Objects without a record are unreferenced and
harmless; a record whose branch move was lost is repaired (the branch set to the last
recorded commit) before any other milestone work. A retry after a crash at any point makes
the same milestone. Milestones of one project are made one at a time (a lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import asdict, dataclass, field

from conflux import formats
from conflux._tomlfile import TomlFile
from conflux.codec import packb, unpackb
from conflux.kernel import op_parts
from conflux.errors import InputError, NotFound, StoreError
from conflux.schema import is_utf8
from conflux.transfer import document

__all__ = ["Milestones", "Milestone", "MilestoneSettings", "NothingToCommit",
           "ViolationsPresent"]

_AUTHOR = ("Conflux", "conflux@localhost")
#: Above this many operations the message summarises per entity and actor.
LIST_LIMIT = 200
#: ... and lists at most this many of those summary lines.
SUMMARY_LIMIT = 100
TITLE_LIMIT = 200


class NothingToCommit(InputError):
    """No operation since the last milestone."""

    http_status = 409
    code = "nothing_to_commit"


class ViolationsPresent(InputError):
    """An environment to project has schema violations (``--force`` projects it anyway)."""

    http_status = 409
    code = "violations"


@dataclass(frozen=True)
class MilestoneSettings:
    """``[milestones]`` of ``config.toml``."""

    repository: str = "milestones.git"  # relative to .conflux/
    branch: str = "main"
    format: str = "yaml"
    remote: str | None = None
    remote_branch: str | None = None
    every_ops: int = 0
    every_seconds: float = 0.0

    @classmethod
    def load(cls, root: str) -> "MilestoneSettings":
        path = os.path.join(root, "config.toml")
        try:
            doc = TomlFile(path, keep=True)  # config.toml: kept parsed for the next command
        except FileNotFoundError:
            return cls()
        table = doc.data.get("milestones", {})
        line = doc.top_key("milestones")
        if not isinstance(table, dict):
            doc.fail("[milestones] must be a table", line=line)
        known = tuple(cls.__dataclass_fields__)
        span = doc.table("milestones")
        for key in table:
            if key not in known:
                doc.fail(f"[milestones]: unknown key {key!r} (known: {', '.join(known)})",
                         line=doc.first_line(doc.key(key, span), line))
        for key, kinds in (("repository", str), ("branch", str), ("format", str),
                           ("remote", str), ("remote_branch", str), ("every_ops", int),
                           ("every_seconds", (int, float))):
            value = table.get(key)
            if value is not None and (not isinstance(value, kinds) or isinstance(value, bool)
                                      or (not isinstance(value, str) and value < 0)):
                what = "text" if kinds is str else "a number, 0 or more"
                doc.fail(f"[milestones] {key} must be {what} (got {value!r})",
                         line=doc.first_line(doc.key(key, span), line))
        out = cls(**table)
        try:
            serializer = formats.for_name(out.format, writable=True)
        except InputError as exc:
            doc.fail(f"[milestones] format: {exc.message}",
                     line=doc.first_line(doc.key("format", span), line))
        if not serializer.readable:  # 'conflux diff' reads milestones back
            both = [n for n in formats.registry().names(writable=True)
                    if formats.for_name(n).readable]
            doc.fail(f"[milestones] format {out.format!r} cannot be read back (diff reads "
                     f"milestones); use one of {', '.join(both)}",
                     line=doc.first_line(doc.key("format", span), line))
        return out


@dataclass
class Milestone:
    id: int
    commit: str
    seq: int  # the last op-log sequence number covered
    first_seq: int  # the first one (previous milestone's seq + 1)
    operations: int
    envs: list
    affected: list
    hlc_from: int
    hlc_to: int
    title: str
    created_ms: int
    forced: bool = False
    trees: dict = field(default_factory=dict)  # env -> git tree id
    message: str = ""

    def pack(self) -> bytes:
        """The record the store keeps (``milestones`` table)."""
        return packb(asdict(self), use_bin_type=True)

    @classmethod
    def unpack(cls, raw: bytes) -> "Milestone":
        return cls(**unpackb(raw))

    def to_dict(self, core) -> dict:
        out = asdict(self)
        out.pop("trees")
        out["hlc_from"] = core.hlc_format(self.hlc_from) if self.hlc_from else None
        out["hlc_to"] = core.hlc_format(self.hlc_to) if self.hlc_to else None
        out["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_ms / 1000))
        return out


def read_milestones(store, txn, after: int = 0) -> list[Milestone]:
    """The milestones recorded in ``store`` after number ``after``, oldest first."""
    return [Milestone.unpack(raw) for raw in store.milestones_after(txn, after)]


def last_milestone(store, txn) -> Milestone | None:
    """The newest milestone recorded in ``store``, or None."""
    raw = store.milestone_last(txn)
    return None if raw is None else Milestone.unpack(raw)


class Milestones:
    """The milestones of one project (``engine``)."""

    def __init__(self, engine):
        self.engine = engine
        self.settings = MilestoneSettings.load(engine.root)
        self.path = os.path.join(engine.root, self.settings.repository)
        self._repo = None
        self.serializer = formats.for_name(self.settings.format, writable=True)
        self.ext = self.serializer.extensions[0]

    # -- the repository -----------------------------------------------------------------------

    @property
    def repo(self):
        if self._repo is None:
            import pygit2

            try:
                if os.path.exists(self.path):
                    self._repo = pygit2.Repository(self.path)
                else:
                    self._repo = pygit2.init_repository(self.path, bare=True,
                                                        initial_head=self.settings.branch)
            except pygit2.GitError as exc:
                raise StoreError(f"milestone repository {self.path}: {exc}") from None
        return self._repo

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.settings.branch}"

    @contextlib.contextmanager
    def _locked(self):
        """One milestone at a time per project (CLI, daemon workers, the scheduler)."""
        with open(os.path.join(self.engine.root, "milestone.lock"), "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                self._repair()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _repair(self) -> None:
        """Point the branch at the last recorded milestone (a crash may have lost the move)."""
        last = self.last()
        if last is None:
            return
        import pygit2

        oid = pygit2.Oid(hex=last.commit)
        ref = self.repo.references.get(self.ref)
        if ref is None or ref.target != oid:
            self.repo.references.create(self.ref, oid, force=True)

    # -- records ------------------------------------------------------------------------------

    def repair(self) -> None:
        """Bring the branch in line with the store after a crash (see the module's notes)."""
        with self._locked():
            pass

    def list(self, *, reader=None) -> list[Milestone]:
        """Every milestone, oldest first; a ``reader`` needs ``read`` in the base
        environment."""
        self._require_read(reader, None)
        store = self.engine.store
        with store.read() as txn:
            return read_milestones(store, txn)

    def last(self) -> Milestone | None:
        store = self.engine.store
        with store.read() as txn:
            return last_milestone(store, txn)

    def _require_read(self, reader, env) -> None:
        if reader is not None:
            engine = self.engine
            engine.policy.require_read(reader, None, None, env or engine.schema.base_env)

    def get(self, ref: str | int | None = None, *, reader=None, env=None) -> Milestone:
        """A milestone by number, commit id (or a prefix of 7+ hex digits), or the latest; a
        ``reader`` needs ``read`` in ``env`` (default: the base environment)."""
        self._require_read(reader, env)
        if ref is None or ref == "latest":
            found = self.last()
            if found is None:
                raise NotFound("no milestone yet (create one with 'conflux milestone create')")
            return found
        text = str(ref)
        if text.isascii() and text.isdigit() and len(text) < 7:
            with self.engine.store.read() as txn:
                raw = self.engine.store.milestone_get(txn, int(text))
            if raw is None:
                raise NotFound(f"no milestone {text}")
            return Milestone.unpack(raw)
        if len(text) >= 7 and all(c in "0123456789abcdef" for c in text.lower()):
            matches = [m for m in self.list() if m.commit.startswith(text.lower())]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InputError(f"commit prefix {text} names {len(matches)} milestones")
        raise NotFound(f"no milestone {text} (give its number or its commit id)")

    # -- creating -----------------------------------------------------------------------------

    def create(self, title: str, *, envs: list[str] | None = None, force: bool = False,
               clock=time.time, actor=None, dry_run: bool = False) -> Milestone:
        """Commit the resolved state of ``envs`` (default: all) as the next milestone. An
        ``actor`` needs ``milestone`` on every environment projected. ``dry_run``: check
        everything and return the milestone it would be (no commit, ``commit`` empty),
        writing nothing, to the repository or the store."""
        if actor is not None:
            schema = self.engine.schema
            for env in envs or ():
                schema.env_chain(env)  # NotFound for an unknown environment
            self.engine.policy.require_milestone(actor, envs or list(schema.environments))
        if not isinstance(title, str) or not title.strip() or "\n" in title.strip():
            raise InputError("a milestone needs a one-line message (-m)")
        title = title.strip()
        if len(title) > TITLE_LIMIT or not title.isprintable() or not is_utf8(title):
            raise InputError(f"a milestone's message is printable text of at most "
                             f"{TITLE_LIMIT} characters", field="message")
        schema = self.engine.schema
        envs = list(dict.fromkeys(envs)) if envs else list(schema.environments)
        for env in envs:
            schema.env_chain(env)  # NotFound for an unknown environment
        with self._locked():
            return self._create(title, envs, force, clock, dry_run=dry_run)

    def _create(self, title, envs, force, clock, cluster: dict | None = None, *,
                dry_run: bool = False) -> Milestone:
        """Make the next milestone. In a cluster (``create_if_due_shared``), ``cluster``
        gives its number, its git parent (or None: this repository's previous milestone),
        the operations it covers (its message's; those since this store's own previous
        milestone still decide which entities are written again) and ``record``, called with
        the milestone before this store records it."""
        engine, repo = self.engine, self.repo
        previous = self.last()
        start = previous.seq + 1 if previous else 1
        with engine.store.read() as txn:
            last_seq = engine.store.log_tail(txn)[0]
            ops = []
            for seq, data in engine.store.log_entries(txn, start):
                op = engine.core.decode_entry(data)
                op.seq = seq
                ops.append(op)
            listed = ops if cluster is None else cluster["ops"]
            if not listed:
                since = f"milestone {previous.id}" if previous else "the project began"
                raise NothingToCommit(f"no operations since {since}: nothing to commit")
            if not force:
                broken = [v for env in envs for v in engine.violations(env)]
                if broken:
                    shown = "; ".join(f"{v['env']}: {v['entity_id']}.{v['field']}: "
                                      f"{v['message']}" for v in broken[:3])
                    more = f" (and {len(broken) - 3} more)" if len(broken) > 3 else ""
                    raise ViolationsPresent(
                        f"{len(broken)} schema violation(s) in the environments to project: "
                        f"{shown}{more}; fix them, or pass --force")
            touched = self._touched(ops)
            trees = {}
            for env in [] if dry_run else envs:
                base = (previous.trees.get(env) if previous else None)
                if base is None:
                    ids = engine._entity_ids(txn, env)
                else:
                    ids = sorted(touched.get(env, ()))
                docs = engine._resolved(txn, env, ids)
                trees[env] = self._env_tree(base, {eid: docs.get(eid) for eid in ids})
        hlcs = [op.hlc for op in listed]
        affected = sorted({p.env for op in listed for p in op_parts(op)},
                          key=engine.schema.environments.index)
        number = (previous.id + 1) if previous else 1
        if cluster:  # one made by hand here took a number of its own: never reuse it
            number = max(number, cluster["number"])
        milestone = Milestone(
            id=number, commit="", seq=last_seq, first_seq=start,
            operations=len(listed), envs=envs, affected=affected, hlc_from=min(hlcs),
            hlc_to=max(hlcs), title=title, created_ms=int(clock() * 1000), forced=force,
            trees={env: str(oid) for env, oid in trees.items()})
        milestone.message = self._message(milestone, listed)
        if dry_run:
            return milestone
        import pygit2
        from pygit2.enums import FileMode

        root = repo.TreeBuilder()
        for env in envs:
            root.insert(env, trees[env], FileMode.TREE)

        when = int(milestone.created_ms // 1000)
        author = pygit2.Signature(*_AUTHOR, when, 0)
        parents = [pygit2.Oid(hex=previous.commit)] if previous else []
        if cluster and cluster["parent"]:
            parents = [pygit2.Oid(hex=cluster["parent"])]
        oid = repo.create_commit(None, author, author, milestone.message, root.write(), parents)
        milestone.commit = str(oid)
        # libgit2 does not sync the objects it writes: before the store records a milestone
        # (a synced commit), its objects must be on disk too, or a power cut could leave a
        # record naming a commit the repository lost
        os.sync()
        _fault("milestone-objects-written")
        if cluster:
            cluster["record"](milestone)  # the cluster's record first: a lost lease stops here
        self._store(milestone)
        _fault("milestone-recorded")
        repo.references.create(self.ref, oid, force=True)
        return milestone

    def _touched(self, ops) -> dict[str, set]:
        """env -> the entities whose resolved state ops may have changed there (an op's own
        environment and every one inheriting from it)."""
        schema = self.engine.schema
        out: dict[str, set] = {}
        for op in ops:
            for part in op_parts(op):
                if not part.entity:
                    continue
                for env in [part.env, *schema.children(part.env)]:
                    out.setdefault(env, set()).add(part.entity)
        return out

    def _env_tree(self, base: str | None, entities: dict):
        """The git tree of one environment: ``base`` (a tree id, or None for an empty one)
        with the given entities written (a dict of fields) or removed (None)."""
        import pygit2
        from pygit2.enums import FileMode

        repo, schema = self.repo, self.engine.schema
        base_tree = repo[pygit2.Oid(hex=base)] if base else None
        by_type: dict[str, dict] = {}
        for entity_id, fields in entities.items():
            type_name, _, name = entity_id.partition(".")
            by_type.setdefault(type_name, {})[name] = fields
        top = repo.TreeBuilder(base_tree) if base_tree is not None else repo.TreeBuilder()
        for type_name in sorted(by_type):
            old = top.get(type_name)
            builder = repo.TreeBuilder(repo[old.id]) if old is not None else repo.TreeBuilder()
            for name, fields in by_type[type_name].items():
                filename = name + self.ext
                if fields is None:
                    if builder.get(filename) is not None:
                        builder.remove(filename)
                    continue
                data = self.serializer.dump(document(schema, f"{type_name}.{name}", fields))
                blob = repo.create_blob(data.encode() if isinstance(data, str) else data)
                builder.insert(filename, blob, FileMode.BLOB)
            if len(builder):
                top.insert(type_name, builder.write(), FileMode.TREE)
            elif old is not None:
                top.remove(type_name)
        return top.write()

    def _store(self, milestone: Milestone) -> None:
        packed = milestone.pack()

        def body(txn):
            self.engine.store.milestone_put(txn, milestone.id, packed)
        self.engine.store.write(body)

    def _message(self, milestone: Milestone, ops) -> str:
        """The commit message, in the shape docs/concepts.md shows."""
        engine, core = self.engine, self.engine.core
        base = engine.schema.base_env
        lines = [f"milestone: {milestone.title}", "", "Operations since last milestone:"]
        if len(ops) <= LIST_LIMIT:
            rows = []
            for op in ops:
                text = engine.describe(op, new_from_unset=True)
                if op.env != base and op.field:
                    head, sep, rest = text.partition(": ")
                    text = f"{head}@{op.env}{sep}{rest}"
                elif op.env != base:
                    text += f" @{op.env}"
                rows.append((f"[{op.actor_class}:{op.actor}]", text +
                             (f" ({op.intent})" if op.intent else "")))
            width = max(len(a) for a, _ in rows)
            lines += [f"  {actor.ljust(width)} {text}" for actor, text in rows]
        else:
            groups: dict[tuple, list] = {}
            for op in ops:
                for part in op_parts(op):
                    key = (f"[{part.actor_class}:{part.actor}]", part.entity or "(promotion)")
                    groups.setdefault(key, []).append(part)
            ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
            width = max(len(actor) for (actor, _), _ in ordered[:SUMMARY_LIMIT])
            for (actor, entity), parts in ordered[:SUMMARY_LIMIT]:
                fields = sorted({p.field for p in parts if p.field})
                what = f" ({', '.join(fields[:6])}{', ...' if len(fields) > 6 else ''})" \
                    if fields else ""
                lines.append(f"  {actor.ljust(width)} {entity}: {len(parts)} "
                             f"operation{'s' if len(parts) != 1 else ''}{what}")
            if len(ordered) > SUMMARY_LIMIT:
                rest = sum(len(p) for _, p in ordered[SUMMARY_LIMIT:])
                lines.append(f"  ... and {len(ordered) - SUMMARY_LIMIT} more entity and actor "
                             f"pairs ({rest} operations)")
            lines.append(f"  (summarised per entity and actor; every operation: 'conflux log "
                         f"--since {milestone.first_seq}')")
        lines += ["", f"Environments affected: {', '.join(milestone.affected)}",
                  f"Causal range: {core.hlc_format(milestone.hlc_from)} → "
                  f"{core.hlc_format(milestone.hlc_to)}",
                  f"Operations: {milestone.operations}"]
        if milestone.forced:
            lines.append("Projected with --force despite schema violations")
        return "\n".join(lines) + "\n"

    # -- reading back -------------------------------------------------------------------------

    def documents(self, milestone: Milestone, env: str) -> dict[str, dict]:
        """entity id -> document, as the milestone's tree holds them for ``env``."""
        import pygit2

        tree_id = milestone.trees.get(env)
        if tree_id is None:
            raise NotFound(f"milestone {milestone.id} did not project {env} "
                           f"(it has {', '.join(milestone.envs)})")
        loader = self.serializer
        out = {}
        for type_entry in self.repo[pygit2.Oid(hex=tree_id)]:
            for blob in self.repo[type_entry.id]:
                name = blob.name[: -len(self.ext)] if blob.name.endswith(self.ext) else blob.name
                docs = loader.load(self.repo[blob.id].data, blob.name)
                out[f"{type_entry.name}.{name}"] = docs[0] if docs else {}
        return out

    def diff(self, ref=None, env: str | None = None, *, reader=None, to=None) -> list[dict]:
        """Per entity and field of ``env``: the value at the milestone and now (or at the
        later milestone ``to``), with the operations in between (oldest first); a
        ``reader`` needs ``read`` in ``env``."""
        self._require_read(reader, env)
        from conflux.transfer import documents_of

        engine = self.engine
        milestone = self.get(ref)
        env = env or engine.schema.base_env
        chain = set(engine.schema.env_chain(env))  # NotFound for an unknown environment
        then = self.documents(milestone, env)
        end = None
        if to is None:
            now = dict(documents_of(engine, env))
        else:
            later = self.get(to)
            if later.id < milestone.id:
                raise InputError(f"milestone {later.id} is older than {milestone.id}: compare "
                                 "the older with the newer", field="to")
            now, end = self.documents(later, env), later.seq
        # (to a later milestone: its operations only, the log read no further)
        ops = [] if end is not None and end <= milestone.seq else engine.log(
            start=milestone.seq + 1, reverse=False,
            limit=None if end is None else end - milestone.seq)
        between: dict[tuple, list] = {}
        for op in ops:
            if end is not None and op.seq > end:
                break
            for part in op_parts(op):
                if part.env in chain and part.entity:
                    between.setdefault((part.entity, part.field), []).append(
                        dict(engine.op_dict(part), seq=op.seq))
        out = []
        for entity_id in sorted(set(then) | set(now)):
            before, after = then.get(entity_id, {}), now.get(entity_id, {})
            for fname in sorted((set(before) | set(after)) - {"name"}):
                old, new = before.get(fname), after.get(fname)
                if old == new:
                    continue
                out.append({"entity_id": entity_id, "field": fname, "env": env,
                            "at_milestone": old, "now": new,
                            "operations": between.get((entity_id, fname), []) +
                            between.get((entity_id, None), [])})
        return out

    # -- scheduling and pushing ---------------------------------------------------------------

    def create_if_due(self, now: float | None = None) -> Milestone | None:
        """The scheduler's milestone: made only when ``due`` still holds under the lock, so
        several schedulers (or a person at the same moment) never make two for one change."""
        with self._locked():
            if not self.due(now):
                return None
            last = self.last()
            pending = self.engine.last_seq() - (last.seq if last else 0)
            return self._create(f"scheduled: {pending} operation{'s' if pending != 1 else ''}",
                                list(self.engine.schema.environments), False, time.time)

    def create_if_due_shared(self, lease, now: float | None = None) -> Milestone | None:
        """The scheduler's milestone when the op log is shared by several daemons, made by
        the holder of the cluster's ``milestones`` lease (``conflux.store.lease``).

        The schedule's state is the cluster's, in PostgreSQL (``conflux_milestones``): the
        last milestone's number, time and position in the shared log, however many daemons
        held the lease before. A milestone is due when ``every_ops`` rows of the shared log
        lie beyond that position, or ``every_seconds`` passed and one row does, counting only
        rows this daemon's store has applied; it covers this store's state, is numbered after
        the cluster's last, records the position up to which its state holds every row, and
        lists the operations between the two positions. It is recorded in PostgreSQL in a
        transaction that checks the lease is held, before this store records it: a holder
        that lost the lease records nothing, and the next holder makes that milestone.

        With a ``remote``, the cluster's last milestone whose commit is neither in this
        repository nor on the remote never reached anyone (its maker died between the
        cluster's record and the push): it is made again, with the same number, covering from
        the previous milestone's position, and its record replaces the lost one's in the same
        transaction, so the remote's history holds every number once. While the remote cannot
        be fetched, nothing is made (``StoreError``): whether that commit reached it is
        unknown.
        """
        from conflux.store.lease import MilestoneRecords
        from conflux.store.shared_log import START

        s = self.settings
        if not s.every_ops and not s.every_seconds:
            return None
        records = MilestoneRecords(lease.conn)
        with self._locked():
            last = lost = records.last()
            if last is None or not self._lost(last["commit"]):
                lost = None
            else:
                last = records.before(lost["id"])
            at = last["position"] if last else START
            applied = tuple(self.engine.shared_position())
            if applied <= at:
                return None
            pending = records.count_between(at, applied)
            if not pending:
                return None
            now = now if now is not None else time.time()
            since = last["made"] if last else (records.first_op_time() or now)
            if not ((s.every_ops and pending >= s.every_ops)
                    or (s.every_seconds and now - since >= s.every_seconds)):
                return None
            covered, ops = self._applied_rows(lease, at, applied)
            parent = self._cluster_parent(last["commit"]) if last else None

            def record(milestone):
                records.record(lease, milestone.id, covered, milestone.commit,
                               milestone.pack(), replacing=lost and lost["commit"])
            return self._create(
                f"scheduled: {len(ops)} operation{'s' if len(ops) != 1 else ''}",
                list(self.engine.schema.environments), False, time.time,
                {"number": last["id"] + 1 if last else 1, "parent": parent, "ops": ops,
                 "record": record})

    def _applied_rows(self, lease, after, applied):
        """The shared log's rows after ``after`` that this store has applied, as logged ops
        with this store's sequence numbers, and the position of the last: every row up to
        ``applied`` (where the store's replicator has read to), and those beyond it up to
        the first one not applied here yet."""
        engine, ops, at = self.engine, [], after
        while True:
            rows = lease.rows(at, limit=1000)
            if not rows:
                return at, ops
            with engine.store.read() as txn:
                for position, op_id, entry in rows:
                    seq = engine._seq_of(txn, op_id)
                    if seq is None:
                        if position <= applied:  # cannot be: the replicator applied it
                            raise StoreError(f"op {op_id} of the shared log is not in this "
                                             "store although its replicator passed it")
                        return at, ops
                    op = engine.core.decode_entry(entry)
                    op.seq = seq
                    ops.append(op)
                    at = position

    def _lost(self, commit: str) -> bool:
        """Whether the cluster's milestone ``commit`` never reached anyone: it is neither in
        this repository nor on the remote. Without a remote every holder's repository is its
        own, so nothing can tell; ``StoreError`` when the remote cannot be fetched."""
        if commit in self.repo or self._remote() is None:
            return False
        self._fetch()
        return commit not in self.repo

    def _cluster_parent(self, commit: str) -> str | None:
        """The git parent of the next milestone in a cluster: the cluster's last milestone
        when this repository has it (fetched from the remote if need be), else the remote
        branch's head, else None (this repository's own previous milestone)."""
        repo = self.repo
        if commit in repo:
            return commit
        fetched = self.fetch()
        if commit in repo:
            return commit
        return fetched

    def fetch(self) -> str | None:
        """Fetch the remote branch (``remote``, ``remote_branch``) into this repository; its
        head, or None without a remote or when it cannot be fetched."""
        try:
            return self._fetch()
        except StoreError:
            return None

    def _fetch(self) -> str | None:
        """``fetch``, but ``StoreError`` when the remote cannot be fetched (None: no remote,
        or the remote has no such branch yet)."""
        remote = self._remote()
        if remote is None:
            return None
        import pygit2

        # a branch deleted on the remote must not leave its old head here
        with contextlib.suppress(KeyError):
            self.repo.references.delete("refs/conflux/remote")
        try:
            remote.fetch([f"+{self._remote_ref()}:refs/conflux/remote"])
        except pygit2.GitError as exc:
            raise StoreError(f"fetch from {self.settings.remote} failed: {exc}") from None
        found = self.repo.references.get("refs/conflux/remote")
        return None if found is None else str(found.target)

    def due(self, now: float | None = None) -> bool:
        """Whether the schedule of ``config.toml`` calls for a milestone now: something
        changed, and ``every_ops`` operations or ``every_seconds`` passed since the last."""
        s = self.settings
        if not s.every_ops and not s.every_seconds:
            return False
        last = self.last()
        pending = self.engine.last_seq() - (last.seq if last else 0)
        if pending <= 0:
            return False
        if s.every_ops and pending >= s.every_ops:
            return True
        if s.every_seconds:
            since = (last.created_ms / 1000) if last else self._first_op_time()
            return (now if now is not None else time.time()) - since >= s.every_seconds
        return False

    def _first_op_time(self) -> float:
        ops = self.engine.log(start=1, reverse=False, limit=1)
        return (ops[0].hlc >> 16) / 1000 if ops else time.time()

    def push(self) -> str | None:
        """Push the branch to the configured remote (a path or URL); the remote's ref."""
        remote = self._remote()
        if remote is None:
            return None
        import pygit2

        dest = self._remote_ref()
        try:
            remote.push([f"+{self.ref}:{dest}"])
        except pygit2.GitError as exc:
            raise StoreError(f"push to {self.settings.remote} failed: {exc}") from None
        return dest

    def _remote(self):
        """The configured remote (a path, relative to the project, or a URL), or None."""
        remote = self.settings.remote
        if not remote:
            return None
        target = remote if "://" in remote or os.path.isabs(remote) else os.path.join(
            self.engine.root, remote)
        return self.repo.remotes.create_anonymous(target)

    def _remote_ref(self) -> str:
        return f"refs/heads/{self.settings.remote_branch or self.settings.branch}"


def _fault(point: str) -> None:
    """Crash-test hook: ``CONFLUX_FAULT=<point>`` kills the process there (tests prove a
    milestone interrupted at each point leaves store and repository consistent)."""
    if os.environ.get("CONFLUX_FAULT") == point:
        os.kill(os.getpid(), 9)


"""The catalog: the entity ids of an environment, filtered and paged, for people browsing a
large state (the web console's state page, ``GET /v1/entities``).

PERF: listing the entities of an environment scans every record of its chain (a few hundred
milliseconds at 100,000 entities). The sorted ids are kept between reads, per environment,
with the log sequence number they are at; a read brings them up to date from the ops logged
since (the entities those ops wrote), and a page checks only its own entities' existence.
"""

from __future__ import annotations

import bisect

from conflux.actors import Actor

#: Beyond this many ops logged since, the ids are listed again rather than brought up to date.
_CATCH_UP = 50_000


class Catalog:
    """Entity ids by environment (a part of ``Engine``)."""

    def _catalog(self, txn, env) -> list[str]:
        """Sorted ids of every entity with records up ``env``'s chain (deleted ones too).
        The list is replaced, never changed in place, and only when an entity is new."""
        seq = self.store.log_tail(txn)[0]
        held = self._catalogs.get(env) if self._catalogs is not None else None
        if held is not None and held[0] == seq:
            return held[1]
        if held is not None and 0 <= seq - held[0] <= _CATCH_UP:
            chain = set(self.schema.env_chain(env))
            ids, known, new = held[1], None, []
            for _, entry in self.store.log_entries(txn, held[0] + 1):
                op = self.core.decode_entry(entry)
                for part in op.children or (op,):
                    entity = part.entity
                    if not entity or part.env not in chain:
                        continue
                    if known is None:
                        known = set(ids)
                    if entity not in known and entity.partition(".")[0] in self.schema.types:
                        known.add(entity)
                        new.append(entity)
            if new:
                ids = sorted(ids + new)
        else:
            ids = self._entity_ids(txn, env)
        if self._catalogs is None:
            self._catalogs = {}
        self._catalogs[env] = (seq, ids)
        return ids

    _catalogs = None

    def _search(self, ids: list[str], needle: str) -> list[int]:
        """The indexes of the ids containing ``needle`` (lower case). PERF: one lower-cased
        text of every id, searched by ``str.find`` (made again only when the list is
        replaced): a few milliseconds over 100,000 ids, where a loop over them took 40."""
        held = self._search_index
        if held is None or held[0] is not ids:
            lowered = [e.lower() for e in ids]
            starts, pos = [], 0
            for e in lowered:
                starts.append(pos)
                pos += len(e) + 1
            held = self._search_index = (ids, "\n".join(lowered), starts)
        _, blob, starts = held
        hits, at = [], blob.find(needle)
        while at >= 0:
            i = bisect.bisect_right(starts, at) - 1
            hits.append(i)
            at = blob.find(needle, starts[i + 1]) if i + 1 < len(starts) else -1
        return hits

    _search_index = None

    def entity_page(self, env: str | None = None, *, types: list[str] | None = None,
                    match: str | None = None, offset: int = 0, limit: int = 100,
                    reader: Actor | None = None) -> dict:
        """A page of the entities of ``env``, in id order: those of ``types``, whose id
        contains ``match`` (case-insensitive), that a ``reader`` may read. ``{"env",
        "entities": [id, ...], "offset", "limit", "matched", "more"}``: ``matched`` counts
        the ids that match, deleted entities included (a page lists existing ones only)."""
        env = self._env(env)
        for type_name in types or ():
            self.schema.entity_type(type_name)
        needle = match.lower() if match else None
        may_read = self.policy.may_read
        with self.store.read() as txn:
            ids = self._catalog(txn, env)
            # the types' ids are runs of the sorted list
            ranges = ([(bisect.bisect_left(ids, f"{t}."), bisect.bisect_left(ids, f"{t}/"))
                       for t in sorted(set(types))] if types else [(0, len(ids))])
            if needle is not None:
                hits = [] if "\n" in needle else self._search(ids, needle)
                ids = [ids[i] for i in hits if any(lo <= i < hi for lo, hi in ranges)]
            elif types:
                ids = [e for lo, hi in ranges for e in ids[lo:hi]]
            if reader is not None and self.policy.rules.enforced:
                ids = [e for e in ids if may_read(reader, e, None, env)]
            read = self.store.entity_reader(txn)
            page, at = [], offset
            # the page's entities that exist; past deleted ones
            while at < len(ids) and len(page) < limit:
                entity_id = ids[at]
                if self._exists(txn, env, entity_id, read):
                    page.append(entity_id)
                at += 1
        return {"env": env, "entities": page, "offset": offset, "limit": limit,
                "matched": len(ids), "next": at if at < len(ids) else None}

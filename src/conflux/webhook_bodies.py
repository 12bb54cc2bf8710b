"""What webhooks registered over REST (``conflux.webhook_registry``) are sent: the original
Conflux's one change per POST, and a milestone as a GitHub ``push`` event (``gitops``)."""

from __future__ import annotations

import json
import os
import time

from conflux.kernel import op_parts

__all__ = ["conflicting", "original_payload", "push_event"]


def conflicting(engine, op) -> bool:
    """Whether an op wrote a ``review`` field that holds concurrent candidates now."""
    return any(v is not None for v in engine.contending(
        [(p.env, p.entity, p.field) for p in op_parts(op) if p.field]))


def original_payload(engine, op) -> dict:
    """One change as the original Conflux's webhooks sent it."""
    from conflux.original import log_entry

    entry = log_entry(engine.op_dict(op), engine.schema.base_env)
    out = {"event_type": entry["type"], "entity_id": entry["entity_id"],
           "actor_id": entry["actor_id"], "actor_class": entry["actor_class"],
           "timestamp": entry["timestamp"], "operation_id": entry["id"],
           "has_conflict": conflicting(engine, op), "seq": entry["seq"],
           "env": entry["env"]}
    if entry.get("field") is not None:
        out["field"] = entry["field"]
    for key in ("value", "chosen_value", "elements"):
        if key in entry:
            out["value_json"] = json.dumps(entry[key], ensure_ascii=False)
            break
    if entry["intent"]:
        out["intent"] = entry["intent"]
    return out


def push_event(engine, m) -> dict:
    """A milestone as a GitHub ``push`` event of the milestone repository (its remote
    when one is configured): what git-pulling reconcilers take as "refresh now"."""
    from conflux.milestones import MilestoneSettings, read_milestones

    settings = MilestoneSettings.load(engine.root)
    # the remote the reconciler pulls, without any credentials in it; without a remote, the
    # repository's name only (a path of this machine is not the receiver's business)
    url = _public(settings.remote) if settings.remote else \
        os.path.basename(settings.repository.rstrip("/"))
    branch = (settings.remote_branch or settings.branch) if settings.remote \
        else settings.branch
    store = engine.store
    with store.read() as txn:
        before = read_milestones(store, txn, max(0, m.id - 2))
    before = [x for x in before if x.id == m.id - 1]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(m.created_ms / 1000))
    name = os.path.basename(url.rstrip("/")).removesuffix(".git") or "milestones"
    commit = {"id": m.commit, "message": "\n\n".join(p for p in (m.title, m.message) if p),
              "timestamp": stamp, "url": url,
              "author": {"name": "conflux", "email": "conflux@localhost"},
              "added": [], "removed": [], "modified": []}
    return {"ref": f"refs/heads/{branch}",
            "before": before[0].commit if before else "0" * 40, "after": m.commit,
            "created": not before, "deleted": False, "forced": False,
            "repository": {"name": name, "full_name": f"conflux/{name}", "html_url": url,
                           "clone_url": url, "url": url, "default_branch": branch},
            "pusher": {"name": "conflux"}, "sender": {"login": "conflux"},
            "head_commit": commit, "commits": [commit],
            "conflux": {"milestone": m.to_dict(engine.core)}}


def _public(url: str) -> str:
    """A git remote without the user and password it may carry."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(parts._replace(netloc=host))
    if not parts.scheme and "@" in url.split(":", 1)[0]:  # scp-like user@host:path
        return url.split("@", 1)[1]
    return url

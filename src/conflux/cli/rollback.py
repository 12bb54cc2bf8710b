"""conflux rollback: return an environment (or some entities) to a milestone's values, by
ordinary forward operations."""

from conflux.cli._output import actor_of, add_actor, add_json, open_engine, print_json


def add_parser(sub):
    p = sub.add_parser("rollback", help="return an environment to a milestone's values",
                       description="Return an environment (or the ENTITY arguments only) to "
                                   "the values a milestone projected, by ordinary forward "
                                   "operations written now, with the intent 'rollback to "
                                   "milestone N': history is never rewritten. Where a field's "
                                   "strategy would keep the current value (a max field above "
                                   "the milestone's), the write is an override. What cannot "
                                   "be rolled back in the environment itself (elements of a "
                                   "grow field, a value an overlay inherits) is listed as "
                                   "kept. One atomic batch, under the access rules.")
    p.add_argument("milestone", metavar="MILESTONE",
                   help="a milestone number, a commit id, or 'latest'")
    p.add_argument("entities", metavar="ENTITY", nargs="*",
                   help="only these entities (default: every entity)")
    p.add_argument("--env", help="environment (default: the base); the milestone must have "
                                 "projected it")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would be written, writing nothing")
    add_actor(p)
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    from conflux import rollback
    from conflux.milestones import Milestones

    engine = open_engine(args)
    milestones = Milestones(engine)
    milestones.repair()
    done = rollback.run(engine, milestones, args.milestone, actor_of(args), env=args.env,
                        entities=args.entities or None, dry_run=args.dry_run)
    if args.json:
        print_json({k: v for k, v in done.items() if k not in ("ops", "acks")}
                   | {"dry_run": args.dry_run, "written": 0 if args.dry_run else len(done["ops"]),
                      "seq": done["acks"][-1].seq if done["acks"] and not args.dry_run
                      else None})
        return 0
    head = f"milestone {done['milestone']}, {done['env']}"
    if not done["changes"] and not done["skipped"]:
        print(f"{head}: already at the milestone's values; nothing to write")
        return 0
    for c in done["changes"]:
        target = f"{c['entity_id']}.{c['field']}" if c["field"] else c["entity_id"]
        extra = " [override]" if c.get("override") else ""
        print(f"  {target}: {_text(engine, c, 'now')} → {_text(engine, c, 'at_milestone')}  "
              f"({c['op']}{extra})")
    for s in done["skipped"]:
        print(f"  {s['entity_id']}.{s['field']}: kept {_text(engine, s, 'now')} "
              f"({s['reason']})")
    if args.dry_run:
        print(f"{head}: would write {len(done['ops'])} operation(s); nothing was written")
    else:
        last = done["acks"][-1].seq if done["acks"] else None
        print(f"{head}: wrote {len(done['ops'])} operation(s)"
              + (f" (up to seq {last})" if last else ""))
        for c in done["remaining"]:
            target = f"{c['entity_id']}.{c['field']}" if c["field"] else c["entity_id"]
            print(f"  still differs: {target}: {_text(engine, c, 'now')} (the milestone: "
                  f"{_text(engine, c, 'at_milestone')}); run the rollback again")
        if done["remaining"]:
            return 1
    return 0


def _text(engine, change: dict, key: str) -> str:
    """A value of a change as the rest of the command line shows it (``30s``, not ms)."""
    value = change[key]
    if value is None:
        return "unset" if change["field"] else "absent"
    if not change["field"]:
        return str(value)
    spec = engine.schema.field(change["entity_id"].partition(".")[0], change["field"])
    if isinstance(value, list):
        return "[" + ", ".join(spec.format_element(v) for v in value) + "]"
    return spec.format(value)

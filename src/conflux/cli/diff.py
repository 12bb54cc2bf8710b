"""conflux diff: what changed since a milestone, per entity and field."""

from conflux.cli._output import add_json, count, open_engine, print_json
from conflux.errors import InputError


def add_parser(sub):
    p = sub.add_parser("diff", help="what changed since a milestone (default: the latest)",
                       description="Per entity and field of an environment: the value at the "
                                   "milestone and now, with the operations in between.")
    p.add_argument("milestone", metavar="MILESTONE", nargs="?", default=None,
                   help="a milestone number or commit id (default: the latest)")
    p.add_argument("--milestone", dest="milestone_opt", metavar="MILESTONE",
                   help="the same as MILESTONE (the original Conflux's spelling)")
    p.add_argument("--env", help="environment (default: the base)")
    p.add_argument("--from-env", metavar="ENV",
                   help="with --to-env: compare two environments' resolved values now, field "
                        "by field, instead of a milestone with now")
    p.add_argument("--to-env", metavar="ENV", help="the environment compared with --from-env")
    p.add_argument("-e", "--entity", metavar="ID|PREFIX",
                   help="only entities whose id starts with this")
    p.add_argument("--summary", action="store_true", help="only the counts")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text for people (default) or json for programs")
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    from conflux.milestones import Milestones

    if (args.from_env is None) != (args.to_env is None):
        raise InputError("--from-env and --to-env go together")
    if args.milestone is not None and args.milestone_opt is not None:
        raise InputError("give the milestone once: MILESTONE or --milestone")
    engine = open_engine(args)
    if args.from_env is not None:
        if args.milestone or args.milestone_opt or args.env:
            raise InputError("--from-env/--to-env compare two environments now: they take no "
                             "milestone and no --env")
        return _envs(engine, args)
    milestones = Milestones(engine)
    m = milestones.get(args.milestone or args.milestone_opt or "latest")
    env = args.env or engine.schema.base_env
    changes = [c for c in milestones.diff(m.id, env)
               if not args.entity or c["entity_id"].startswith(args.entity)]
    if args.json or args.format == "json":
        print_json({"milestone": m.id, "commit": m.commit, "env": env, "changes": changes})
        return 0
    if args.summary:
        print(f"{env} since milestone {m.id}: {count(len(changes), 'field')} changed in "
              f"{count(len({c['entity_id'] for c in changes}), 'entity', 'entities')}")
        return 0
    if not changes:
        print(f"{env}: no change since milestone {m.id} ({m.commit[:12]})")
        return 0
    print(f"{env} since milestone {m.id} ({m.commit[:12]} {m.title}):")
    for c in changes:
        spec = engine.schema.field(c["entity_id"].partition(".")[0], c["field"])
        old = "unset" if c["at_milestone"] is None else _show(spec, c["at_milestone"])
        new = "unset" if c["now"] is None else _show(spec, c["now"])
        print(f"  {c['entity_id']}.{c['field']}: {old} → {new}")
        for op in c["operations"]:
            intent = f" ({op['intent']})" if op.get("intent") else ""
            print(f"      {op['seq']:>6}  {op['hlc']}  [{op['actor_class']}:{op['actor']}]  "
                  f"{op['type']}{intent}")
    return 0


def _show(spec, value) -> str:
    """A document value (durations already as text) in the field's display form."""
    if isinstance(value, str) and (spec.item_kind or spec.kind) == "duration":
        return value
    if isinstance(value, list) and (spec.item_kind or spec.kind) == "duration":
        return "[" + ",".join(value) + "]"
    return spec.format(value)


def _envs(engine, args) -> int:
    from conflux.original import env_diff

    diff = env_diff(engine, args.from_env, args.to_env)
    found = [d for d in diff["differences"]
             if not args.entity or d["entity_id"].startswith(args.entity)]
    if args.json or args.format == "json":
        print_json({**diff, "differences": found})
        return 0
    if not args.summary:
        for d in found:
            spec = engine.schema.field(d["entity_id"].partition(".")[0], d["field"])
            old = "(none)" if d["from_value"] is None else _show(spec, d["from_value"])
            new = "(none)" if d["to_value"] is None else _show(spec, d["to_value"])
            print(f"  {d['entity_id']}.{d['field']}: {old} → {new}")
    print(f"{count(len(found), 'field')} differ between {args.from_env} and {args.to_env}"
          if found else f"no difference between {args.from_env} and {args.to_env}")
    return 0

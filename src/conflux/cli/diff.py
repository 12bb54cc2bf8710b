"""conflux diff: what changed since a milestone, per entity and field."""

from conflux.cli._output import add_json, open_engine, print_json


def add_parser(sub):
    p = sub.add_parser("diff", help="what changed since a milestone (default: the latest)",
                       description="Per entity and field of an environment: the value at the "
                                   "milestone and now, with the operations in between.")
    p.add_argument("milestone", metavar="MILESTONE", nargs="?", default="latest",
                   help="a milestone number or commit id (default: the latest)")
    p.add_argument("--env", help="environment (default: the base)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text for people (default) or json for programs")
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    from conflux.milestones import Milestones

    engine = open_engine(args)
    milestones = Milestones(engine)
    m = milestones.get(args.milestone)
    env = args.env or engine.schema.base_env
    changes = milestones.diff(m.id, env)
    if args.json or args.format == "json":
        print_json({"milestone": m.id, "commit": m.commit, "env": env, "changes": changes})
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

"""conflux blame: per field, who set it, when and why."""

from conflux.cli._output import add_json, hlc_text, open_engine, print_json, show_value, table


def add_parser(sub):
    p = sub.add_parser("blame", help="per field: value, actor, intent and time of its op",
                       description="For each field of an entity: the resolved value, the "
                                   "environment it came from, and the operation that set it.")
    p.add_argument("entity", metavar="ENTITY")
    p.add_argument("--env", help="environment (default: the base)")
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    engine = open_engine(args)
    env = args.env or engine.schema.base_env
    fields = engine.blame(args.entity, env)
    if args.json:
        print_json({"entity_id": args.entity, "env": env, "fields": {
            name: {**item, "hlc": hlc_text(engine, item["hlc"])}
            for name, item in fields.items()}})
        return 0
    rows = []
    for name, item in fields.items():
        who = f"[{item['actor_class']}:{item['actor']}]" if item["actor"] else "?"
        origin = "" if item["env"] == env else f"(from {item['env']})"
        rows.append([name, show_value(engine, args.entity, name, item["value"]), origin, who,
                     hlc_text(engine, item["hlc"]), f"seq {item['seq']}",
                     f"({item['intent']})" if item["intent"] else ""])
    print(f"{args.entity} in {env}")
    print(table(rows))

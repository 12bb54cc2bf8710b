"""conflux get: resolved values, with the environment each came from."""

from conflux.cli._output import add_json, open_engine, print_json, show_value, table


def add_parser(sub):
    p = sub.add_parser("get", help="resolved values of an entity, and where each came from",
                       description="Show an entity's resolved fields in an environment: its "
                                   "own value, else the parent's, up to the base, else the "
                                   "field's default.")
    p.add_argument("entity", metavar="ENTITY")
    p.add_argument("field", metavar="FIELD", nargs="?")
    p.add_argument("--env", help="environment (default: the base)")
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    engine = open_engine(args)
    env = args.env or engine.schema.base_env
    fields = engine.get(args.entity, env, args.field)
    if args.json:
        print_json({"entity_id": args.entity, "env": env, "fields": {
            name: {**item, "hlc": engine.core.hlc_format(item["hlc"]) if item.get("hlc")
                   else None} for name, item in fields.items()}})
        return 0
    if args.field:
        item = fields[args.field]
        print(show_value(engine, args.entity, args.field, item["value"]))
        return 0
    rows = []
    for name, item in fields.items():
        origin = "(default)" if item.get("default") else (
            "" if item["env"] == env else f"(from {item['env']})")
        flag = "override" if item.get("override") else ""
        rows.append([name, show_value(engine, args.entity, name, item["value"]), origin, flag])
    print(f"{args.entity} in {env}")
    print(table(rows))

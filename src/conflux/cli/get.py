"""conflux get: resolved values, with the environment each came from."""

from conflux.cli._output import add_json, open_engine, print_json, show_value, table


def add_parser(sub):
    p = sub.add_parser("get", help="resolved values of an entity, and where each came from",
                       description="Show an entity's resolved fields in an environment: its "
                                   "own value, else the parent's, up to the base, else the "
                                   "field's default.")
    p.add_argument("entity", metavar="ENTITY", nargs="?",
                   help="entity id (default: every entity of the environment)")
    p.add_argument("field", metavar="FIELD", nargs="?")
    p.add_argument("--env", help="environment (default: the base)")
    p.add_argument("-t", "--entity-type", metavar="TYPE", action="append",
                   help="without ENTITY: only entities of this type (repeatable)")
    p.add_argument("-o", "--output", choices=("plain", "json", "yaml"), default=None,
                   help="plain (default), json, or yaml (every entity: {id: {field: value}})")
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    engine = open_engine(args)
    env = args.env or engine.schema.base_env
    output = "json" if args.json else args.output or "plain"
    if args.entity is None:
        return _all(engine, env, args.entity_type, output)
    fields = engine.get(args.entity, env, args.field)
    if output == "yaml":
        _yaml({args.entity: {name: item["value"] for name, item in fields.items()}})
        return 0
    if output == "json":
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


def _all(engine, env, types, output) -> int:
    for name in types or ():
        engine.schema.entity_type(name)
    state = engine.state(env, types)
    if output == "json":
        print_json({"env": env, "entities": state})
    elif output == "yaml":
        _yaml(state)
    else:
        print(f"{len(state):,} entities in {env}")
        for entity_id, fields in state.items():
            values = "  ".join(f"{name}={show_value(engine, entity_id, name, value)}"
                               for name, value in fields.items())
            print(f"{entity_id}  {values}".rstrip())
    return 0


def _yaml(data) -> None:
    import sys

    import yaml

    yaml.safe_dump(data, sys.stdout, sort_keys=False, allow_unicode=True,
                   default_flow_style=False)

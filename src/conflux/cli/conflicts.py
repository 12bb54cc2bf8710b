"""conflux conflicts: review fields with concurrent writes waiting for a decision."""

from conflux.cli._output import add_json, hlc_text, open_engine, print_json, show_value


def add_parser(sub):
    p = sub.add_parser("conflicts", help="review-field conflicts",
                       description="List review fields with concurrent candidates. The "
                                   "effective value meanwhile is the LWW winner (last shown).")
    p.add_argument("--env", help="only this environment")
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    engine = open_engine(args)
    found = engine.conflicts(args.env)
    if args.json:
        print_json([c | {"candidates": [x | {"hlc": hlc_text(engine, x["hlc"])}
                                         for x in c["candidates"]]} for c in found])
        return 0
    if not found:
        print("no conflicts")
    for c in found:
        print(f"{c['env']}: {c['entity_id']}.{c['field']}  ({len(c['candidates'])} candidates)")
        for x in c["candidates"]:
            value = ("(unset)" if x["value"] is None
                     else show_value(engine, c["entity_id"], c["field"], x["value"]))
            intent = f"  ({x['intent']})" if x["intent"] else ""
            print(f"  {value:<20} [{x['actor_class']}:{x['actor']}]  "
                  f"{hlc_text(engine, x['hlc'])}{intent}")

"""conflux log: the operation log, newest first."""

from conflux.cli._output import add_json, hlc_text, open_engine, print_json


def add_parser(sub):
    p = sub.add_parser("log", help="the operation log, newest first",
                       description="Show logged operations, newest first, with actor, "
                                   "intent and HLC.")
    p.add_argument("--limit", type=int, default=20, metavar="N",
                   help="at most N operations (default 20; 0 for all)")
    p.add_argument("--entity", help="only operations on this entity")
    p.add_argument("--actor", help="only operations by this actor (ID or CLASS:ID)")
    p.add_argument("--since", metavar="SEQ|HLC|DATE",
                   help="only from this sequence number, hlc:... or ISO date/time on")
    p.add_argument("-o", "--output", choices=("plain", "json"), default=None,
                   help="plain: a line per operation (default); json: a JSON array")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="plain output with each operation's id, previous value, base and "
                        "signature on lines of their own")
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    engine = open_engine(args)
    ops = engine.log(limit=args.limit or None, entity=args.entity, actor=args.actor,
                     since=args.since)
    if args.json or args.output == "json":
        print_json([engine.op_dict(op) for op in ops])
        return 0
    for op in ops:
        intent = f"  ({op.intent})" if op.intent else ""
        print(f"{op.seq:>6}  {hlc_text(engine, op.hlc)}  [{op.actor_class}:{op.actor}]  "
              f"{op.env}: {engine.describe(op)}{intent}")
        if args.verbose:
            entry = engine.op_dict(op)
            for key in ("op_id", "previous", "base", "override", "key_id"):
                if entry.get(key) not in (None, False, []):
                    print(f"        {key}: {entry[key]}")



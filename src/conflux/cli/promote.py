"""conflux promote: copy resolved values from one environment to another, as one op."""

from conflux.cli._output import actor_of, add_actor, add_json, open_engine, print_json


def add_parser(sub):
    p = sub.add_parser("promote", help="copy resolved values up the chain as one operation",
                       description="Copy the resolved values of entities from one environment "
                                   "into another (usually its parent), recorded as one "
                                   "promote operation that expands into field operations.")
    p.add_argument("--from", dest="source", required=True, metavar="ENV")
    p.add_argument("--to", dest="target", required=True, metavar="ENV")
    p.add_argument("entities", nargs="*", metavar="ENTITY",
                   help="entities to promote (default: every entity that differs)")
    p.add_argument("--intent", default="", help="why")
    p.add_argument("--dry-run", action="store_true", help="show, write nothing")
    add_actor(p)
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    engine = open_engine(args)
    actor = actor_of(args)
    ack = engine.promote(args.source, args.target, args.entities or None, actor,
                         intent=args.intent, dry_run=args.dry_run)
    if args.json:
        print_json(ack.to_dict(engine.core))
        return 0
    op = None if args.dry_run else engine.op(ack.op_id)
    count = f"{len(op.children)} field operations" if op else "dry run"
    print(f"{'would promote' if args.dry_run else 'ok: promoted'} {args.source} → "
          f"{args.target} ({count}; op {ack.op_id}, seq {ack.seq})")

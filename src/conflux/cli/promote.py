"""conflux promote: copy resolved values from one environment to another, as one op."""

from conflux.cli._output import actor_of, add_actor, add_json, open_engine, print_json
from conflux.errors import InputError


def add_parser(sub):
    p = sub.add_parser("promote", help="copy resolved values up the chain as one operation",
                       description="Copy the resolved values of entities from one environment "
                                   "into another (usually its parent), recorded as one "
                                   "promote operation that expands into field operations.")
    p.add_argument("--from", dest="source", metavar="ENV",
                   help="the environment to copy from (or the first of FROM TO)")
    p.add_argument("--to", dest="target", metavar="ENV",
                   help="the environment to copy into (or the second of FROM TO)")
    p.add_argument("words", nargs="*", metavar="[FROM TO] ENTITY",
                   help="FROM TO as the original Conflux took them (without --from/--to), "
                        "then the entities to promote (default: every entity that differs)")
    p.add_argument("-e", "--entity", action="append", default=[], metavar="ENTITY",
                   help="an entity to promote (repeatable; the same as naming it)")
    p.add_argument("-f", "--field", action="append", metavar="FIELD",
                   help="promote only this field (repeatable; default: every field)")
    p.add_argument("-i", "--intent", default="", help="why")
    p.add_argument("--dry-run", action="store_true", help="show, write nothing")
    add_actor(p)
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    words = list(args.words)
    if args.source is None and args.target is None:
        if len(words) < 2:
            raise InputError("promote needs FROM and TO: 'conflux promote staging production' "
                             "or --from staging --to production")
        args.source, args.target = words.pop(0), words.pop(0)
    elif args.source is None or args.target is None:
        raise InputError("--from and --to go together")
    entities = words + args.entity
    engine = open_engine(args)
    actor = actor_of(args)
    ack = engine.promote(args.source, args.target, entities or None, actor,
                         intent=args.intent, dry_run=args.dry_run, fields=args.field)
    if args.json:
        print_json(ack.to_dict(engine.core))
        return 0
    op = None if args.dry_run else engine.op(ack.op_id)
    count = f"{len(op.children)} field operations" if op else "dry run"
    print(f"{'would promote' if args.dry_run else 'ok: promoted'} {args.source} → "
          f"{args.target} ({count}; op {ack.op_id}, seq {ack.seq})")

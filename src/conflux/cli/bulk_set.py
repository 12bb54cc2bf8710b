"""conflux bulk-set: one field of every entity an id pattern matches, in one atomic batch."""

from conflux.cli._output import (actor_of, add_actor, add_json, count, open_engine,
                                 print_json, show_value)
from conflux.errors import InputError


def add_parser(sub):
    p = sub.add_parser("bulk-set", help="set one field on every entity a pattern matches",
                       description="Set FIELD to VALUE on every entity of the environment "
                                   "whose id matches PATTERN (a glob: route.*, "
                                   "service.api-*), as one batch: every write is applied or, "
                                   "if one is refused, none. VALUE is read as each field's "
                                   "type, as 'conflux set' reads it.")
    p.add_argument("pattern", metavar="PATTERN", help="entity ids to match, e.g. 'route.*'")
    p.add_argument("field", metavar="FIELD")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("-t", "--entity-type", metavar="TYPE", action="append",
                   help="only entities of this type (repeatable)")
    p.add_argument("--env", help="environment (default: the base)")
    p.add_argument("-i", "--intent", default="", help="why: kept in the log with each write")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would change, write nothing")
    add_actor(p)
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    engine = open_engine(args)
    env = args.env or engine.schema.base_env
    for name in args.entity_type or ():
        engine.schema.entity_type(name)  # an unknown type is refused, naming the known ones
    entities = engine.matching(args.pattern, env, args.entity_type)
    if not entities:
        raise InputError(f"no entity in {env} matches {args.pattern!r}: nothing was written")
    lacking = sorted({e.partition(".")[0] for e in entities
                      if args.field not in engine.schema.types[e.partition(".")[0]].fields})
    if lacking:
        raise InputError(f"{args.field!r} is not a field of type {', '.join(lacking)} (the "
                         f"pattern matches entities of it: narrow it with -t): nothing was "
                         f"written")
    ops = [{"type": "set_field", "entity_id": e, "field": args.field, "env": env,
            "intent": args.intent,
            "value": engine.schema.field(e.partition(".")[0], args.field).parse_text(
                args.value)} for e in entities]
    before = engine.resolved(entities, env)
    acks = engine.apply(ops, actor_of(args), dry_run=args.dry_run)
    if args.json:
        print_json({"env": env, "dry_run": args.dry_run,
                    "ops": [{"entity_id": op["entity_id"], **ack.to_dict(engine.core)}
                            for op, ack in zip(ops, acks)]})
        return 0
    verb = "would set" if args.dry_run else "set"
    for op, ack in zip(ops, acks):
        old = before.get(op["entity_id"], {}).get(args.field)
        shown = "(not set)" if old is None else show_value(engine, op["entity_id"],
                                                           args.field, old)
        new = show_value(engine, op["entity_id"], args.field, op["value"])
        kept = "" if ack.applied is not False else \
            f"  (the merge keeps {show_value(engine, op['entity_id'], args.field, ack.value)})"
        print(f"  {op['entity_id']}.{args.field}: {shown} -> {new}{kept}")
    print(f"{verb} {args.field} on {count(len(ops), 'entity', 'entities')} in {env}"
          + ("" if args.dry_run else f" (one batch, seqs {acks[0].seq}-{acks[-1].seq})"))
    return 0

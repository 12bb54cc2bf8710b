"""conflux resolve: settle a review conflict with a chosen value."""

from conflux.cli._output import (actor_of, add_actor, add_json, open_engine, parse_value,
                                 print_json)


def add_parser(sub):
    p = sub.add_parser("resolve", help="settle a review conflict",
                       description="Write the chosen value to a review field, superseding "
                                   "every current candidate.")
    p.add_argument("entity", metavar="ENTITY")
    p.add_argument("field", metavar="FIELD")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--env", help="environment (default: the base)")
    p.add_argument("--intent", default="", help="why")
    add_actor(p)
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    engine = open_engine(args)
    value = parse_value(engine, args.entity, args.field, args.value)
    actor = actor_of(args)
    ack = engine.resolve(args.entity, args.field, value, actor, env=args.env,
                         intent=args.intent)
    if args.json:
        print_json(ack.to_dict(engine.core))
    else:
        print(f"ok: resolved {args.entity}.{args.field} = {args.value} "
              f"(op {ack.op_id}, seq {ack.seq})")

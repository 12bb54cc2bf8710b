"""conflux delete: delete an entity (a tombstone; a later write revives it)."""

from conflux.cli._output import actor_of, add_actor, add_json, open_engine, print_json


def add_parser(sub):
    p = sub.add_parser("delete", help="delete an entity in an environment",
                       description="Delete an entity: an LWW tombstone over all its fields in "
                                   "the environment. Everything stamped before the delete is "
                                   "hidden, whenever it arrives; a write stamped after it "
                                   "revives the entity (a max/min field once it reaches its "
                                   "old extreme).")
    p.add_argument("entity", metavar="ENTITY")
    p.add_argument("--env", help="environment (default: the base)")
    p.add_argument("--intent", default="", help="why")
    add_actor(p)
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    engine = open_engine(args)
    op = {"type": "delete_entity", "entity_id": args.entity, "env": args.env,
          "intent": args.intent}
    actor = actor_of(args)
    ack = engine.apply([op], actor)[0]
    if args.json:
        print_json(ack.to_dict(engine.core))
    else:
        print(f"ok: deleted {args.entity} in {args.env or engine.schema.base_env} "
              f"(op {ack.op_id}, seq {ack.seq})")

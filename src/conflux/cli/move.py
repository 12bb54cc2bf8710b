"""conflux move: put an entity under a parent in the entity tree, or make it a root."""

from conflux.cli._output import actor_of, add_actor, add_json, open_engine, print_json


def add_parser(sub):
    p = sub.add_parser("move", help="put an entity under a parent in the entity tree",
                       description="Move an entity in the entity tree: under PARENT (whose "
                                   "type declares children of the entity's type, "
                                   "[entity.<type>.children] in the schema) or, with --root, "
                                   "to the top. The tree is kept in the base environment and "
                                   "every environment shows it. Concurrent moves converge: "
                                   "every move counts in timestamp order and one that would "
                                   "put an entity under itself is skipped; here, such a move "
                                   "is refused and nothing is written.")
    p.add_argument("entity", metavar="ENTITY")
    p.add_argument("parent", metavar="PARENT", nargs="?", help="the new parent's id")
    p.add_argument("--root", action="store_true", help="make the entity a root (no parent)")
    p.add_argument("--position", metavar="POS",
                   help="where among its siblings: an integer (as written: 7, -2), or text "
                        "compared byte by byte (a fractional index such as a0; 007 is text); "
                        "integers come first, then text, then entities with none")
    p.add_argument("--intent", default="", help="why")
    add_actor(p)
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    from conflux.errors import InputError

    if (args.parent is None) == (not args.root):
        raise InputError("give PARENT, or --root to make the entity a root (not both)")
    import re

    position = args.position
    if position is not None and re.fullmatch(r"-?(0|[1-9][0-9]{0,17})", position):
        position = int(position)  # an integer as written: '007' or 'a0' stay text
    engine = open_engine(args)
    op = {"type": "move_entity", "entity_id": args.entity, "parent": args.parent,
          "position": position, "intent": args.intent}
    ack = engine.apply([op], actor_of(args))[0]
    if args.json:
        print_json(ack.to_dict(engine.core))
        return
    where = f"under {args.parent}" if args.parent else "as a root"
    at = "" if position is None else f" at {position!r}"
    print(f"ok: {args.entity} {where}{at} (op {ack.op_id}, seq {ack.seq})")

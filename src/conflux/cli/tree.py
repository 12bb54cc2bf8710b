"""conflux tree: the entity tree (parents, positions, children) as an environment shows it."""

from conflux.cli._output import actor_of, add_actor, open_engine, print_json


def add_parser(sub):
    p = sub.add_parser("tree", help="show the entity tree",
                       description="Show the entity tree as an environment shows it: each "
                                   "entity under its parent, siblings in position order. An "
                                   "entity whose parent does not exist there is shown under "
                                   "its nearest ancestor that does, or as a root. Only "
                                   "entities that were placed (moved, or inserted with a "
                                   "parent) or have children are listed.")
    p.add_argument("entity", metavar="ENTITY", nargs="?",
                   help="show this entity's subtree only")
    p.add_argument("--env", help="environment (default: the base)")
    p.add_argument("-o", "--output", choices=("plain", "json"), default="plain",
                   help="plain: an indented outline (default); json: every entity with its "
                        "parent, position and children")
    add_actor(p)
    p.set_defaults(handler=run)


def run(args):
    from conflux.errors import NotFound

    engine = open_engine(args)
    reader = actor_of(args)
    tree = engine.tree(args.env, reader=reader)
    entities = tree["entities"]
    if args.entity is not None:
        engine.place(args.entity, args.env, reader=reader)  # NotFound when it does not exist
        if args.entity not in entities:
            raise NotFound(f"{args.entity} has no place in the entity tree (no parent, no "
                           "children)", entity=args.entity)
        tops = [args.entity]
    else:
        tops = tree["roots"]
    if args.output == "json":
        keep = {}
        stack = list(tops)
        while stack:
            entity_id = stack.pop()
            keep[entity_id] = entities[entity_id]
            stack.extend(entities[entity_id]["children"])
        print_json({"env": tree["env"], "roots": tops,
                    "entities": {e: keep[e] for e in sorted(keep)}})
        return
    if not tops:
        print(f"(no entity has a place in the tree in {tree['env']})")
        return

    stack = [(top, 0) for top in reversed(tops)]  # (a deep tree needs no recursion)
    while stack:
        entity_id, depth = stack.pop()
        position = entities[entity_id]["position"]
        at = "" if position is None else f"  @{position}"
        print(f"{'  ' * depth}{entity_id}{at}")
        stack.extend((child, depth + 1) for child in reversed(entities[entity_id]["children"]))

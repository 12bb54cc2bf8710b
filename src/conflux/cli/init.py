"""conflux init: create a project from a schema."""

def add_parser(sub):
    p = sub.add_parser("init", help="create a project (.conflux/) from a schema",
                       description="Create .conflux/ in the project directory: the schema in "
                                   "force, config.toml and the LMDB store. The schema is "
                                   "validated first; a bad one is refused with file, line, "
                                   "entity and field.")
    p.add_argument("--schema", required=True, metavar="FILE", help="the schema (TOML)")
    p.set_defaults(handler=run)


def run(args):
    from conflux.engine import Engine

    engine = Engine.init(args.dir, args.schema)
    envs = ", ".join(engine.schema.environments)
    print(f"initialised {engine.root} for '{engine.schema.name}' "
          f"({len(engine.schema.types)} entity types; environments: {envs}; "
          f"core: {engine.core.IMPLEMENTATION})")
    engine.close()

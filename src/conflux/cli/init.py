"""conflux init: create a project from a schema."""

def add_parser(sub):
    p = sub.add_parser("init", help="create a project (.conflux/) from a schema",
                       description="Create .conflux/ in the project directory: the schema in "
                                   "force, config.toml and the LMDB store. The schema is "
                                   "validated first; a bad one is refused with file, line, "
                                   "entity and field.",
                       epilog="With --store the project's op log of record is a shared log "
                              "on PostgreSQL, which several daemons use at once "
                              "(docs/cluster.md): the URL is written to config.toml as "
                              "[store] url. It holds no password (one that does is refused): "
                              "give it in PGPASSWORD or ~/.pgpass. PostgreSQL must be "
                              "reachable: the log's tables are made there first, and nothing "
                              "is created when that fails. When the log holds operations "
                              "already (a node joining a running cluster), the new store "
                              "applies them at once, so it serves the cluster's state from "
                              "the start. Without --store the project lives in its LMDB "
                              "store alone and needs no server.")
    p.add_argument("--schema", required=True, metavar="FILE", help="the schema (TOML)")
    p.add_argument("--store", metavar="URL",
                   help="a shared op log on PostgreSQL, postgresql://user@host:port/database "
                        "(default: none, the LMDB store alone)")
    p.set_defaults(handler=run)


def run(args):
    from conflux.engine import Engine

    engine = args.engine = Engine.init(args.dir, args.schema, store_url=args.store)
    envs = ", ".join(engine.schema.environments)
    print(f"initialised {engine.root} for '{engine.schema.name}' "
          f"({len(engine.schema.types)} entity types; environments: {envs}; "
          f"core: {engine.core.IMPLEMENTATION})")
    if args.store is not None:
        from conflux.engine.migration import catch_up

        print(f"shared op log {args.store}: node {engine.node} joined it")
        applied = catch_up(engine)
        print(f"caught up: {applied} ops applied from the shared op log"
              + (f" (state {engine.state_hash()})" if applied else ""))

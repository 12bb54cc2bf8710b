"""conflux init: create a project from a schema."""

from conflux.errors import InputError

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
    p.add_argument("path", metavar="PATH", nargs="?",
                   help="the project directory (default: --dir, or the current directory); "
                        "made if missing")
    p.add_argument("--schema", metavar="FILE",
                   help="the schema (TOML); without it a starter schema is written to "
                        "PATH/schema.toml and used (edit it, then 'conflux init --force')")
    p.add_argument("--name", help="the project's name (the schema's 'name', shown by "
                                  "'conflux status')")
    p.add_argument("-f", "--force", action="store_true",
                   help="in a directory that holds a project already: replace the schema in "
                        "force with this one (checked first); the store, its log and "
                        "config.toml are kept")
    p.add_argument("--store", metavar="URL",
                   help="a shared op log on PostgreSQL, postgresql://user@host:port/database "
                        "(default: none, the LMDB store alone)")
    p.set_defaults(handler=run)


def run(args):
    import os

    from conflux.engine import Engine
    from conflux.engine.settings import starter_schema

    if args.path is not None:
        args.dir = args.path
    schema = args.schema
    if schema is None:
        schema = os.path.join(args.dir, "schema.toml")
        if os.path.exists(schema) and not args.force:
            raise InputError(f"{schema} exists: give it with --schema, or --force to use it")
        if not os.path.exists(schema):
            os.makedirs(args.dir, exist_ok=True)
            with open(schema, "w") as fh:
                fh.write(starter_schema(args.name or os.path.basename(
                    os.path.abspath(args.dir)) or "conflux-project"))
            print(f"wrote a starter schema to {schema}")
    if args.force and Engine.exists(args.dir):
        if args.store is not None:
            raise InputError("--force keeps the project's store: it takes no --store")
        engine = args.engine = Engine.replace_schema(args.dir, schema, name=args.name)
        print(f"replaced the schema of {engine.root} with {schema} (the store and its log "
              f"are kept)")
        return 0
    engine = args.engine = Engine.init(args.dir, schema, store_url=args.store,
                                       name=args.name)
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

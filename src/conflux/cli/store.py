"""conflux store: where the project's op log of record lives (LMDB, or a shared log on
PostgreSQL), and moving it."""

from conflux.cli._output import add_json, print_json


def add_parser(sub):
    p = sub.add_parser(
        "store", help="move the op log of record between LMDB and a shared PostgreSQL log",
        description="A project's op log of record is its LMDB store alone (the default), or "
                    "a shared op log on PostgreSQL that several daemons use at once "
                    "(config.toml's [store] url; docs/cluster.md). 'conflux store migrate' "
                    "moves an existing project from one to the other, checked before "
                    "config.toml is changed.")
    cmds = p.add_subparsers(dest="store_command", metavar="SUBCOMMAND", required=True)
    m = cmds.add_parser(
        "migrate", help="move the op log to a shared PostgreSQL log, or back to LMDB",
        description="--to postgresql://user@host:port/database: append the project's whole "
                    "op log to the shared log there (its tables are made if need be; ops it "
                    "holds already are not appended twice), apply what it holds from other "
                    "nodes, and check that a temporary store fed from the shared log alone "
                    "reaches the same ops and the same state hash as the project. Only then "
                    "is [store] url written to config.toml (its comments kept) and the store "
                    "marked as joined. --to lmdb: catch up with the whole shared log, make "
                    "the same check, then remove [store] url: the project lives in its LMDB "
                    "store alone again, with every operation the cluster logged.",
        epilog="The URL holds no password (one that does is refused): give it in PGPASSWORD "
               "or ~/.pgpass. Stop the project's daemon first: a migration is refused while "
               "one serves the project, and a daemon does not start while a migration runs. "
               "A migration broken off (a crash, PostgreSQL going away), or whose check "
               "fails, leaves config.toml as it was (operations already applied from the "
               "shared log stay in the store): run it again, it repeats nothing twice. "
               "Printed: the ops "
               "published and found there already, the ops applied from the shared log, "
               "and the state hash both sides reached.")
    m.add_argument("--to", required=True, metavar="URL|lmdb",
                   help="postgresql://user@host:port/database, or lmdb")
    add_json(m)
    m.set_defaults(handler=migrate)


def migrate(args):
    from conflux.engine.migration import migrate as move

    done = move(args.dir, args.to)
    if args.json:
        print_json(done)
        return 0
    if done["to"] == "lmdb":
        print(f"caught up with the shared op log {done['from']}: {done['applied']} ops "
              "applied")
        print(f"verified: a store fed from the shared op log alone holds the same "
              f"{done['ops']} ops and state, {done['state_hash']}")
        print("[store] url removed from config.toml: the op log of record is the LMDB store")
        return 0
    print(f"published {done['published']} ops to {done['to']} ({done['already']} were there "
          f"already); applied {done['applied']} ops from other nodes")
    print(f"verified: a store fed from the shared op log alone holds the same {done['ops']} "
          f"ops and state, {done['state_hash']}")
    print(f"[store] url written to config.toml: the op log of record is {done['to']}")
    return 0

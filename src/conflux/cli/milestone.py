"""conflux milestone: commit the resolved state to git; list and show milestones."""

from conflux.cli._output import add_json, count, hlc_text, open_engine, print_json
from conflux.cli._output import actor_of, add_actor


def add_parser(sub):
    p = sub.add_parser(
        "milestone", help="commit the resolved state to the milestone git repository",
        description="Milestones project the resolved state to git as readable commits: "
                    "ENV/TYPE/NAME files (YAML by default) and a message naming every "
                    "operation since the previous milestone.",
        epilog="The repository is a bare git repository in .conflux/ unless config.toml's "
               "[milestones] names another (repository, branch, format, remote, every_ops, "
               "every_seconds).")
    cmds = p.add_subparsers(dest="milestone_command", metavar="SUBCOMMAND", required=True)
    c = cmds.add_parser("create", help="commit a milestone now",
                        description="Commit the resolved state of the environments (all by "
                                    "default) as the next milestone. Refused when no operation "
                                    "happened since the last one, or when an environment has "
                                    "schema violations (unless forced).")
    c.add_argument("-m", "--message", required=True, help="the milestone's title")
    c.add_argument("--env", action="append", metavar="E",
                   help="an environment to project (repeatable; default: all)")
    c.add_argument("--force", action="store_true",
                   help="project environments with schema violations too")
    c.add_argument("--push", action="store_true",
                   help="push the branch to config.toml's remote afterwards")
    c.add_argument("--dry-run", action="store_true",
                   help="check and show the milestone it would be (its number, operations, "
                        "environments and message), committing nothing")
    add_actor(c)
    add_json(c)
    c.set_defaults(handler=create)
    ls = cmds.add_parser("list", help="milestones, newest first",
                         description="List the milestones, newest first.")
    add_json(ls)
    ls.set_defaults(handler=list_)
    sh = cmds.add_parser("show", help="one milestone and its commit message",
                         description="Show a milestone (by number or commit id; default: the "
                                     "latest): its commit, range and message.")
    sh.add_argument("id", metavar="ID", nargs="?", default="latest")
    add_json(sh)
    sh.set_defaults(handler=show)


def _milestones(args):
    from conflux.milestones import Milestones

    return Milestones(open_engine(args))


def create(args):
    milestones = _milestones(args)
    engine = milestones.engine
    m = milestones.create(args.message, envs=args.env, force=args.force, actor=actor_of(args),
                          dry_run=args.dry_run)
    if args.dry_run:
        if args.json:
            print_json({**m.to_dict(engine.core), "dry_run": True})
            return 0
        print(f"would make milestone {m.id} ({count(m.operations, 'operation')}, "
              f"{', '.join(m.envs)}); nothing was committed\n")
        print(m.message)
        return 0
    pushed = milestones.push() if args.push else None
    if args.json:
        print_json({**m.to_dict(engine.core), "pushed": pushed})
        return 0
    print(f"milestone {m.id}: {m.commit[:12]} {m.title} ({count(m.operations, 'operation')}, "
          f"{', '.join(m.envs)})")
    if pushed:
        print(f"pushed to {milestones.settings.remote} {pushed}")
    return 0


def list_(args):
    milestones = _milestones(args)
    engine = milestones.engine
    milestones.repair()
    found = list(reversed(milestones.list()))
    if args.json:
        print_json([m.to_dict(engine.core) for m in found])
        return 0
    if not found:
        print("no milestone yet")
    for m in found:
        d = m.to_dict(engine.core)
        print(f"{m.id:>4}  {m.commit[:12]}  {d['created']}  seq {m.first_seq}-{m.seq}  "
              f"{count(m.operations, 'op')}  {m.title}")
    return 0


def show(args):
    milestones = _milestones(args)
    engine = milestones.engine
    milestones.repair()
    m = milestones.get(args.id)
    if args.json:
        print_json(m.to_dict(engine.core))
        return 0
    d = m.to_dict(engine.core)
    print(f"milestone {m.id}  commit {m.commit}")
    print(f"created   {d['created']}   sequence {m.first_seq}..{m.seq}   "
          f"{hlc_text(engine, m.hlc_from)} → {hlc_text(engine, m.hlc_to)}")
    print(f"projects  {', '.join(m.envs)}{'  (forced)' if m.forced else ''}")
    print()
    print(m.message, end="")
    return 0

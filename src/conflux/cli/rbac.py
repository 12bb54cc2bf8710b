"""conflux rbac: inspect and check the access rules of .conflux/rbac.toml."""

from conflux.cli._output import add_json, print_json, table
from conflux.errors import InputError
from conflux.rbac import ACTIONS


def add_parser(sub):
    p = sub.add_parser("rbac", help="access control: list-roles (show-roles), check, validate",
                       description="Role-based access control from .conflux/rbac.toml: roles "
                                   "with permissions on <entity>[/<field>][@<env>] patterns, "
                                   "inheritance, and roles assigned by actor pattern. Once "
                                   "the file exists whatever it does not grant is denied; "
                                   "without it every authenticated actor may do everything.")
    commands = p.add_subparsers(dest="rbac_command", metavar="SUBCOMMAND", required=True)

    ls = commands.add_parser("list-roles", help="roles, what they inherit and may do",
                             description="List every role: the roles it inherits, its "
                                         "permissions (inherited ones marked with their "
                                         "role) and the actor patterns it is assigned to.")
    _add_file(ls)
    add_json(ls)
    ls.set_defaults(handler=run_list_roles)
    show = commands.add_parser("show-roles", help="the same as list-roles (the original "
                                                  "Conflux's name for it)",
                               description="The same as 'conflux rbac list-roles', under the "
                                           "original Conflux's name.")
    _add_file(show)
    add_json(show)
    show.set_defaults(handler=run_list_roles)

    ck = commands.add_parser("check", help="may ACTOR do ACTION on RESOURCE? (exit 0 allow, "
                                           "1 deny)",
                             description="Say whether ACTOR may do ACTION on RESOURCE and which "
                                         "role grants it. Exit status 0 when allowed, 1 when "
                                         "denied. Give the three positionally or as --actor, "
                                         "--action and --resource. RESOURCE is "
                                         "ENTITY[/FIELD][@ENV], where ENTITY is TYPE.NAME or "
                                         "TYPE/NAME: service/api@staging is the entity "
                                         "service.api in staging; route.api/weight and "
                                         "route/api/weight are its weight field. Without "
                                         "/FIELD it asks about the entity as a whole, without "
                                         "@ENV about the base environment; '*' as ENTITY or "
                                         "ENV asks about every entity or environment.")
    ck.add_argument("actor", metavar="ACTOR", nargs="?",
                    help="[CLASS:]ID, e.g. autoscaler:autoscaler-7 (a bare ID is human:ID)")
    ck.add_argument("action", metavar="ACTION", nargs="?", help=", ".join(ACTIONS))
    ck.add_argument("resource", metavar="RESOURCE", nargs="?",
                    help="ENTITY[/FIELD][@ENV], e.g. service/api@staging")
    ck.add_argument("--actor", dest="actor_opt", metavar="ACTOR", help="the same as ACTOR")
    ck.add_argument("--action", dest="action_opt", metavar="ACTION",
                    help="the same as ACTION")
    ck.add_argument("--resource", dest="resource_opt", metavar="RESOURCE",
                    help="the same as RESOURCE")
    _add_file(ck)
    add_json(ck)
    ck.set_defaults(handler=run_check)

    va = commands.add_parser("validate", help="check an rbac.toml (exit 2 if it is wrong)",
                             description="Check FILE (default: .conflux/rbac.toml): unknown "
                                         "keys, actions and roles, inheritance cycles and bad "
                                         "patterns are reported with file and line, exit status "
                                         "2. Inside a project, patterns must also name entity "
                                         "types, fields and environments its schema declares.")
    va.add_argument("file", metavar="FILE", nargs="?", help="the rules to check (default: "
                                                            ".conflux/rbac.toml)")
    va.set_defaults(handler=run_validate)


def _add_file(parser):
    parser.add_argument("--file", metavar="FILE",
                        help="the rules (default: .conflux/rbac.toml in the project)")


def _load(args, path=None, *, missing_ok=True):
    """The rules, the project's schema (if any) and the file read. Only the project's own
    rbac.toml may be missing (everything allowed); a FILE named on the command line must
    exist."""
    from conflux.engine.policy import load_rules

    return load_rules(args.dir, path, missing_ok=missing_ok)


def run_list_roles(args):
    rules, _, path = _load(args, args.file)
    roles = []
    for role in rules.roles.values():
        roles.append({
            "name": role.name, "description": role.description,
            "inherits": list(role.inherits), "inherited": list(rules.inherited(role.name)[1:]),
            "permissions": [p.to_dict() for p in rules.permissions(role.name)],
            "assigned_to": [a.who for a in rules.assignments if role.name in a.roles]})
    if args.json:
        print_json({"path": path, "enforced": rules.enforced, "roles": roles,
                    "assignments": [{"actor": a.actor, "actor_class": a.cls,
                                     "source": str(a), "roles": list(a.roles)}
                                    for a in rules.assignments]})
        return 0
    if not rules.enforced:
        print(f"no {path}: every authenticated actor may do everything")
        return 0
    print(f"{path}: {len(roles)} roles, {len(rules.assignments)} assignments")
    for role in roles:
        inherits = f"  (inherits {', '.join(role['inherits'])})" if role["inherits"] else ""
        print(f"role {role['name']}{inherits}" +
              (f"  # {role['description']}" if role["description"] else ""))
        rows = [[", ".join(p["actions"]), p["resource"],
                 "" if p["role"] == role["name"] else f"(from {p['role']})"]
                for p in role["permissions"]]
        rows.append(["assigned to", ", ".join(role["assigned_to"]) or "nobody", ""])
        print(table(rows))
    return 0


def run_check(args):
    actor, action, resource = (_one_of(args, name) for name in ("actor", "action", "resource"))
    from conflux.engine.policy import explain

    rules, schema, _ = _load(args, args.file)
    decision = explain(rules, schema, actor, action, resource)
    if args.json:
        print_json(decision.to_dict())
    else:
        verdict = "allow" if decision.allowed else "deny"
        print(f"{verdict}: {decision.actor} {action} {decision.resource}: {decision.reason()}")
    return 0 if decision.allowed else 1


def _one_of(args, name):
    """ACTOR, ACTION or RESOURCE, given positionally or by its option, not both."""
    positional, option = getattr(args, name), getattr(args, f"{name}_opt")
    if positional is not None and option is not None:
        raise InputError(f"{name.upper()} is given twice (positionally and as --{name})")
    if positional is None and option is None:
        raise InputError(f"no {name.upper()}: give ACTOR ACTION RESOURCE, or --actor, "
                         "--action and --resource")
    return positional if positional is not None else option


def run_validate(args):
    rules, schema, path = _load(args, args.file, missing_ok=False)
    against = f"; names checked against schema '{schema.name}'" if schema else ""
    print(f"ok: {path}: {len(rules.roles)} roles, {len(rules.assignments)} assignments"
          f"{against}")
    return 0

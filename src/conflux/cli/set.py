"""conflux set: one operation on one field."""

import os

from conflux.cli._output import (actor_of, add_actor, add_json, open_engine, parse_value,
                                 print_json, require, show_value)


def add_parser(sub):
    p = sub.add_parser("set", help="write one field (or add/remove set elements, or unset)",
                       description="Submit one operation: set a field, add or remove "
                                   "elements of a set field, or unset a field. Values are "
                                   "read as the field's type: text for strings and refs, "
                                   "'30s' for durations, JSON for maps and whole lists.")
    p.add_argument("entity", metavar="ENTITY", help="entity id, e.g. route.api")
    p.add_argument("field", metavar="FIELD")
    p.add_argument("values", metavar="VALUE", nargs="*",
                   help="the value (several with --add/--remove)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--add", action="store_true", help="add the values to a set field")
    mode.add_argument("--remove", action="store_true",
                      help="remove the values from a set field")
    mode.add_argument("--unset", action="store_true",
                      help="remove the field's own value: a tombstone ordered by its time like "
                           "any write (on a max/min field it hides the extreme until a write "
                           "reaches it; with --override it resets the field; on a set field it "
                           "removes the elements this store holds)")
    p.add_argument("--env", help="environment (default: the base)")
    p.add_argument("--intent", default="", help="why: kept in the log with the operation")
    p.add_argument("--override", action="store_true",
                   help="override the merge strategy (e.g. bring a max field down)")
    p.add_argument("--op-id", help="a client op id, for safe retries: the same operation "
                                   "sent again is acknowledged once; another one under a "
                                   "used id is refused")
    p.add_argument("--base", metavar="OPIDS",
                   help="comma-separated op ids of the value(s) you saw (\"\" for none): a "
                        "precondition, or for review fields the candidates you supersede")
    p.add_argument("--dry-run", action="store_true", help="validate and show, write nothing")
    p.add_argument("--sign-key", metavar="FILE.pem", default=os.environ.get("CONFLUX_SIGN_KEY"),
                   help="sign the operation with this registered key (default: "
                        "$CONFLUX_SIGN_KEY); see 'conflux keys'")
    add_actor(p)
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    engine = open_engine(args)
    op = {"entity_id": args.entity, "field": args.field, "env": args.env,
          "intent": args.intent}
    if args.unset:
        require(not args.values, "--unset takes no value")
        op["type"] = "unset_field"
    elif args.add or args.remove:
        require(bool(args.values), f"--{'add' if args.add else 'remove'} needs at least one "
                                   "value")
        op["type"] = "add_elements" if args.add else "remove_elements"
        op["elements"] = [parse_value(engine, args.entity, args.field, v, element=True)
                          for v in args.values]
    else:
        require(len(args.values) == 1, "set needs exactly one VALUE (or --add/--remove/--unset)")
        op["type"] = "set_field"
        op["value"] = parse_value(engine, args.entity, args.field, args.values[0])
    if args.override:
        op["override"] = True
    if args.op_id:
        op["op_id"] = args.op_id
    if args.base is not None:
        op["base"] = [b for b in args.base.split(",") if b]
    actor = actor_of(args)
    if args.sign_key:
        _sign(engine, op, actor, args.sign_key)
    ack = engine.apply([op], actor, dry_run=args.dry_run)[0]
    if args.json:
        print_json(ack.to_dict(engine.core))
        return 0
    env = args.env or engine.schema.base_env
    spec = engine.schema.field(args.entity.partition(".")[0], args.field)
    if op["type"] == "set_field":
        mine = show_value(engine, args.entity, args.field, op["value"])
        what = f"= {mine}"
    elif op["type"] == "unset_field":
        mine = what = "unset"
    else:
        sign = "+" if args.add else "-"
        mine = what = " ".join(sign + spec.format_element(v) for v in op["elements"])
    target = f"{args.entity}.{args.field}"
    where = f"op {ack.op_id}, seq {ack.seq}, {engine.core.hlc_format(ack.hlc)}"
    if ack.applied is False:
        # the merge kept another value: say so, as 'conflux log' does for the logged op
        now = "unset" if ack.value is None else spec.format(ack.value)
        verb = "would keep" if args.dry_run else "kept"
        recorded = ("would be recorded" if args.dry_run else
                    "was already recorded" if ack.duplicate else "is recorded")
        print(f"{verb} {now} ({spec.merge}): {target} stays {now} in {env}; your {mine} "
              f"{recorded} ({where})")
        return 0
    prefix = "would write" if args.dry_run else ("already applied" if ack.duplicate else "ok")
    print(f"{prefix}: {target} {what} in {env} ({where})")


def _sign(engine, op: dict, actor, key_file: str) -> None:
    from conflux.signing import load_private_key

    engine.sign(op, actor, load_private_key(key_file), key_file=key_file)

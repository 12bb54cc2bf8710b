"""conflux audit: the audit trail as JSON Lines, and its verification."""

import sys

from conflux.cli._output import count as plural, open_engine, print_json


def add_parser(sub):
    p = sub.add_parser("audit", help="export the audit trail; verify an exported one",
                       description="The op log as JSON Lines, one operation a line, with its "
                                   "actor, intent, values and signature; and a check of such "
                                   "a file against a key registry.")
    cmds = p.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    e = cmds.add_parser("export", help="the op log as JSON Lines, hash-chained and signed",
                        description="Write the op log, oldest first, one JSON object a line "
                                    "(in constant memory however long the log). Each line "
                                    "carries a hash chained to the line before it in the whole "
                                    "log; the last line is a checkpoint (count, sequence "
                                    "range, head hash) signed with the project's audit key "
                                    "(.conflux/audit-key.pem, made and registered in keys.json "
                                    "at the first export). Keep a checkpoint to check later "
                                    "exports with 'audit verify --extends'.")
    e.add_argument("--since", metavar="SEQ|HLC|DATE", help="from this operation on")
    e.add_argument("--until", metavar="SEQ|HLC|DATE", help="up to this operation")
    e.add_argument("--actor", metavar="ID|CLASS:ID",
                   help="only this actor's operations (each run left out is one 'elided' "
                        "line carrying the chain's hash, so the file still verifies)")
    e.add_argument("--entity", metavar="ID|PREFIX",
                   help="only operations on entities whose id starts with this")
    e.add_argument("--verify", action="store_true",
                   help="also check every exported signature against .conflux/keys.json and "
                        "say how many fail (on standard error; exit status 1 when any does)")
    e.add_argument("--output", "-o", default="-", metavar="FILE",
                   help="the file to write (default: standard output); a regular file is "
                        "replaced once the export is complete, a FIFO or device written to "
                        "in place")
    e.set_defaults(handler=export)
    v = cmds.add_parser("verify", help="check an exported audit file",
                        description="Check an audit file: each line's hash against the chain, "
                                    "the sequence numbers (gaps, renumbering, reordering), "
                                    "time against hlc, every signed line against a key "
                                    "registry (the key must belong to the line's actor and be "
                                    "valid at its time), the signed checkpoint that ends the "
                                    "file (its signature, count, first and last sequence "
                                    "numbers, head hash) and the [signatures] require rules it "
                                    "carries; each failure is printed with its line number. "
                                    "Exit status 1 when any check fails.")
    v.add_argument("file", metavar="FILE")
    v.add_argument("--key-registry", required=True, metavar="FILE",
                   help="a keys.json (e.g. .conflux/keys.json of the project): the signers' "
                        "keys and the project's audit key")
    v.add_argument("--extends", metavar="OLD",
                   help="an earlier export, or its checkpoint line alone: check that FILE "
                        "extends it (the log up to OLD's last line is unchanged)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(handler=verify)


def export(args):
    from conflux.audit import export_lines
    from conflux.destination import open_destination

    engine = open_engine(args)
    what = {"since": args.since, "until": args.until, "actor": args.actor,
            "entity": args.entity}
    failed = 0
    if args.verify:
        from conflux.audit import summary

        _, failed = summary(engine, **what, registry=engine.signatures)
    lines = export_lines(engine, **what)
    count = 0
    with open_destination(args.output) as out:
        for line in lines:
            out.write(line)
            count += line.startswith(b'{"seq"')  # neither elided runs nor the checkpoint
    if args.output != "-":
        print(f"{plural(count, 'operation')} and a signed checkpoint written to {args.output}",
              file=sys.stderr)
    if args.verify:
        print(f"{plural(failed, 'signature')} failed to verify" if failed else
              "every signature verified", file=sys.stderr)
        return 1 if failed else 0
    return 0


def _open(path: str, what: str):
    from conflux.errors import InputError

    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def verify(args):
    import os

    from conflux.audit_verify import read_checkpoint, verify as check
    from conflux.errors import InputError
    from conflux.signing import Registry

    if not os.path.isfile(args.key_registry):
        raise InputError(f"{args.key_registry}: no such key registry")
    registry = Registry(args.key_registry)
    extends = None
    if args.extends:
        with _open(args.extends, "the earlier export") as handle:
            try:
                extends = read_checkpoint(handle)
            except InputError as exc:
                raise InputError(f"--extends {args.extends}: {exc}") from None
    with _open(args.file, "the audit file") as handle:
        report = check(handle, registry, extends=extends)
    if args.json:
        print_json(report.to_dict())
        return 0 if report.ok else 1
    for number, seq, reason in report.problems():
        print(f"FAIL line {number}" + (f" (seq {seq})" if seq is not None else "") +
              f": {reason}")
    if report.unsigned:
        seqs = [str(s) for _, s in report.unsigned]
        shown = ", ".join(seqs[:20]) + (f", ... ({len(seqs)} in all)" if len(seqs) > 20 else "")
        print(f"unsigned: {len(seqs)} line(s), seq {shown}")
    verdict = "OK" if report.ok else "FAILED"
    problems = len(report.failures) + len(report.sequence)
    print(f"{verdict}: {report.lines} lines, {report.signed_ok} signatures verified, "
          f"{problems} problems, {len(report.unsigned)} unsigned")
    cp = report.checkpoint
    if report.ok:
        span = f"seq {cp['first_seq']}-{cp['last_seq']}" if cp["count"] else \
            f"no operations after seq {cp['prev_seq']}"
        print(f"chain and checkpoint verified: {span}, head {cp['head_hash'][:16]}, signed by "
              f"{cp['key_id']} at {cp['time']}" +
              (f"; extends {args.extends}" if extends is not None else ""))
    return 0 if report.ok else 1

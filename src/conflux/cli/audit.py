"""conflux audit: the audit trail as JSON Lines, and its verification."""

import sys

from conflux.cli._output import count as plural, open_engine, print_json


def add_parser(sub):
    p = sub.add_parser("audit", help="export the audit trail; verify an exported one",
                       description="The op log as JSON Lines, one operation a line, with its "
                                   "actor, intent, values and signature; and a check of such "
                                   "a file against a key registry.")
    cmds = p.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    e = cmds.add_parser("export", help="the op log as JSON Lines",
                        description="Write the op log, oldest first, one JSON object a line "
                                    "(in constant memory however long the log).")
    e.add_argument("--since", metavar="SEQ|HLC|DATE", help="from this operation on")
    e.add_argument("--until", metavar="SEQ|HLC|DATE", help="up to this operation")
    e.add_argument("--output", "-o", default="-", metavar="FILE",
                   help="the file to write (default: standard output)")
    e.set_defaults(handler=export)
    v = cmds.add_parser("verify", help="check an exported audit file",
                        description="Check every signed line of an audit file against a key "
                                    "registry (the key must belong to the line's actor and be "
                                    "valid at its time), list unsigned lines apart, and detect "
                                    "gaps and reordering in the sequence numbers. Exit status "
                                    "1 when any check fails.")
    v.add_argument("file", metavar="FILE")
    v.add_argument("--key-registry", required=True, metavar="FILE",
                   help="a keys.json (e.g. .conflux/keys.json of the project)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(handler=verify)


def export(args):
    from conflux.audit import export_lines

    engine = open_engine(args)
    lines = export_lines(engine, since=args.since, until=args.until)
    if args.output == "-":
        out = sys.stdout.buffer
        for line in lines:
            out.write(line)
        out.flush()
        return 0
    tmp = f"{args.output}.partial"
    count = 0
    with open(tmp, "wb") as handle:
        for line in lines:
            handle.write(line)
            count += 1
    import os

    os.replace(tmp, args.output)
    print(f"{plural(count, 'operation')} written to {args.output}", file=sys.stderr)
    return 0


def verify(args):
    import os

    from conflux.audit import verify as check
    from conflux.errors import InputError
    from conflux.signing import Registry

    if not os.path.isfile(args.key_registry):
        raise InputError(f"{args.key_registry}: no such key registry")
    try:
        handle = open(args.file, "rb")
    except OSError as exc:
        raise InputError(f"{args.file}: cannot read: {exc.strerror or exc}") from None
    with handle:
        report = check(handle, Registry(args.key_registry))
    if args.json:
        print_json(report.to_dict())
        return 0 if report.ok else 1
    for number, seq, reason in report.failures:
        print(f"FAIL line {number}" + (f" (seq {seq})" if seq is not None else "") +
              f": {reason}")
    for number, problem in report.sequence:
        print(f"FAIL line {number}: {problem}")
    if report.unsigned:
        seqs = [str(s) for _, s in report.unsigned]
        shown = ", ".join(seqs[:20]) + (f", ... ({len(seqs)} in all)" if len(seqs) > 20 else "")
        print(f"unsigned: {len(seqs)} line(s), seq {shown}")
    verdict = "OK" if report.ok else "FAILED"
    print(f"{verdict}: {report.lines} lines, {report.signed_ok} signatures verified, "
          f"{len(report.failures)} failed, {len(report.sequence)} sequence problems, "
          f"{len(report.unsigned)} unsigned")
    return 0 if report.ok else 1

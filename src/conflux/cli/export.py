"""conflux export: the resolved state as files."""

import sys

from conflux import formats
from conflux.cli._output import count, open_engine, print_json, require
from conflux.cli._progress import Progress


def add_parser(sub):
    p = sub.add_parser(
        "export", help="write the resolved state as files (YAML, JSON, TOML, KDL, XML, HCL)",
        description="Write the resolved state of each environment, one file per entity "
                    "(ENV/TYPE/NAME.EXT in a directory) or one stream on stdout. Each document "
                    "has the entity's name and its fields (defaults included, durations as "
                    "text), so an exported tree imports back as it is: 'conflux import DIR' "
                    "reads a directory written here (YAML, JSON, TOML or KDL) whole, each "
                    "environment into itself, overlays keeping only what they do not inherit.",
        epilog=lambda: (
            f"Formats written: {', '.join(formats.registry().names(writable=True))} (plugins "
            "add more). A stream is YAML documents, a JSON array, TOML [[entity]] tables, KDL "
            "'entity' nodes, an XML <entities> element or HCL 'entity' blocks."))
    p.add_argument("--format", "-f", dest="fmt", required=True, metavar="F", help="the format")
    p.add_argument("--env", action="append", metavar="E",
                   help="an environment to export (repeatable; default: all)")
    p.add_argument("--entity-type", "-t", action="append", metavar="T",
                   help="only entities of this type (repeatable)")
    p.add_argument("--output", "-o", default="-", metavar="DIR|-",
                   help="a directory to write into (its regular files are replaced, others left "
                        "alone; a link or FIFO in the way is refused), "
                        "or '-' for one stream on stdout (the default)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary")
    p.add_argument("--json", action="store_true",
                   help="print the summary as JSON (with --output DIR)")
    p.set_defaults(handler=run)


def run(args):
    from conflux.destination import open_destination
    from conflux.transfer import export_state

    engine = open_engine(args)
    to_stdout = args.output == "-"
    require(not (to_stdout and args.json), "--json reports on files written: give --output DIR")
    if to_stdout:
        with open_destination("-") as out:
            export_state(engine, args.fmt, envs=args.env, types=args.entity_type, output=out,
                         progress=Progress(quiet=args.quiet))
        return 0
    result = export_state(engine, args.fmt, envs=args.env, types=args.entity_type,
                          output=args.output, progress=Progress(quiet=args.quiet))
    summary = result.summary()
    if args.json:
        print_json(summary)
    elif not args.quiet:
        print(f"{count(summary['files'], 'file')}, "
              f"{count(summary['entities'], 'entity', 'entities')}, "
              f"{count(summary['fields'], 'field')} written to {args.output} in "
              f"{summary['seconds']:.2f} s", file=sys.stderr)
    return 0

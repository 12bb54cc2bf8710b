"""conflux import: files or a whole tree as operations, all or nothing."""

import argparse

from conflux import formats
from conflux.cli._output import (actor_of, add_actor, add_json, count, open_engine,
                                 print_json, show_value)
from conflux.cli._progress import Progress


def add_parser(sub):
    p = sub.add_parser(
        "import", help="import config files or a whole tree as operations",
        description="Import a file or a directory tree: each document is an entity of the "
                    "given type, its keys are the schema's fields. Every field that differs "
                    "from the environment's resolved value becomes an operation, all applied "
                    "as one batch (one actor, one intent, one synced commit); one bad file "
                    "imports nothing. Importing the same tree again writes nothing. A directory "
                    "written by 'conflux export' (ENV/TYPE/NAME files) imports back whole, "
                    "without --entity-type: see below.",
        epilog=lambda: (
            f"Formats read: {', '.join(formats.registry().names(readable=True))} (from the "
            "file extension unless --format; plugins add more). A document names its entity "
            "with a 'name' or 'metadata.name' key, or see --name-from. A null value unsets "
            "the field; set and grow fields take the listed elements (a set field drops the "
            "others).\n\n"
            "An export tree: PATH holds environment directories of the schema, each holding "
            "entity type directories (what 'conflux export --output PATH' writes). Each "
            "environment's files go into that environment, each type as that type, in one "
            "batch. A file is the entity's whole resolved state: an overlay is given only the "
            "values that differ from what it inherits (a value equal to the inherited one, or "
            "to the default, is not written as its own), a field the file leaves out is "
            "unset, and an entity an imported ancestor has but the overlay's directory lacks "
            "is deleted in the overlay. With such a tree, --env and --entity-type (one each) "
            "only choose which of its directories to import; a stray file or a directory "
            "that is not an environment or entity type of the schema is refused, naming it."
            "\n\n"
            "Links: PATH itself may be a symbolic link (the tree is where it leads). Inside "
            "it, a link to a file in the tree is read; a link to a directory in the tree is "
            "not followed (its files are read where they are); a link to anything outside "
            "the tree, a link that leads nowhere (a loop, a missing target), and a FIFO, "
            "device or socket refuse the whole import, naming the entry, without reading "
            "it."),
        formatter_class=_Paragraphs)
    p.add_argument("path", metavar="PATH", help="a file or a directory (searched recursively; "
                                                "hidden files skipped; see Links below)")
    p.add_argument("--entity-type", "-t", metavar="T",
                   help="the entity type of every document (required, except for an export "
                        "tree, where it imports only that type's directories)")
    p.add_argument("--env", metavar="E",
                   help="environment to import into (default: the base); for an export tree, "
                        "import only E's directory into E")
    p.add_argument("--format", "-f", dest="fmt", metavar="F",
                   help="read as F: a file given as PATH whatever its extension; in a "
                        "directory, only the files with F's extensions")
    p.add_argument("--name-from", metavar="KEY|file",
                   help="where an entity's name comes from: a key (dotted for nesting, e.g. "
                        "metadata.name) or 'file' (the file name without extension); default "
                        "'name', else 'metadata.name'")
    p.add_argument("--extensions", metavar="EXT,...",
                   help="only files with these extensions, comma-separated (e.g. yaml,json)")
    p.add_argument("--pattern", metavar="GLOB",
                   help="only files whose name matches this glob (e.g. 'svc-*.yaml')")
    p.add_argument("--use-filename-prefix", action="store_true",
                   help="name each entity <file name without extension>.<name>, so that "
                        "files with the same names inside stay apart")
    p.add_argument("--intent", help="why (default: 'import PATH')")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would change, write nothing")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, no summary")
    add_actor(p)
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    from conflux.transfer import import_tree

    engine = open_engine(args)
    actor = actor_of(args)
    result = import_tree(
        engine, args.path, entity_type=args.entity_type, env=args.env, fmt=args.fmt,
        name_from=args.name_from, intent=args.intent, dry_run=args.dry_run, actor=actor,
        progress=Progress(quiet=args.quiet or args.json),
        extensions=[e.strip() for e in args.extensions.split(",") if e.strip()]
        if args.extensions else None, pattern=args.pattern, prefix=args.use_filename_prefix)
    summary = result.summary()
    if args.json:
        print_json({**summary, "changes": [
            {"env": env, "entity_id": e, "field": f, "op": op["type"], "old": old,
             "new": op.get("value", op.get("elements"))}
            for env, e, f, old, op in result.changes]})
        return 0
    if args.dry_run:
        base = engine.schema.base_env
        for env, entity_id, fname, old, op in result.changes:
            at = "" if env == base else f"@{env}"
            if fname is None:
                print(f"  {entity_id}{at}: deleted (it hides what it inherits)")
            else:
                print(f"  {entity_id}.{fname}{at}: {_change(engine, entity_id, fname, old, op)}")
    if not args.quiet or args.dry_run:
        verb = "would write" if args.dry_run else "wrote"
        why = "not chosen" if args.extensions or args.pattern else "unknown extension"
        skipped = f" ({summary['skipped_files']} skipped: {why})" \
            if summary["skipped_files"] else ""
        envs = f" into {', '.join(result.envs)}" if len(result.envs) > 1 else ""
        print(f"{count(summary['files'], 'file')}{skipped}, "
              f"{count(summary['entities'], 'entity', 'entities')}, "
              f"{count(summary['fields'], 'field')} ({summary['unchanged_fields']} unchanged): "
              f"{verb} {count(summary['operations'], 'operation')}{envs} in "
              f"{summary['seconds']:.2f} s")
    return 0


class _Paragraphs(argparse.HelpFormatter):
    """Help wrapped as usual, with the epilog's paragraphs (split by a blank line) kept
    apart."""

    def _fill_text(self, text, width, indent):
        return "\n\n".join(super(_Paragraphs, self)._fill_text(part, width, indent)
                             for part in text.split("\n\n"))


def _change(engine, entity_id, fname, old, op) -> str:
    spec = engine.schema.field(entity_id.partition(".")[0], fname)
    if op["type"] == "unset_field":
        return f"{show_value(engine, entity_id, fname, old)} → unset"
    if op["type"] in ("add_elements", "remove_elements"):
        sign = "+" if op["type"] == "add_elements" else "-"
        return " ".join(sign + spec.format_element(v) for v in op["elements"])
    before = "unset" if old is None else show_value(engine, entity_id, fname, old)
    return f"{before} → {show_value(engine, entity_id, fname, op['value'])}"

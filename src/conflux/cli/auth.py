"""conflux auth: API-key tooling for the daemon's api-keys.toml."""

import sys

from conflux.errors import InputError

# NOTE: api-keys.toml keeps unsalted SHA-256 hashes, which protect a random key but not a
# guessable one; 16 characters is the least we accept from people typing a key in.
MIN_KEY_LENGTH = 16


def add_parser(sub):
    p = sub.add_parser("auth", help="API keys for the daemon (hash-key)",
                       description="API keys for the daemon. The daemon compares the key "
                                   "sent in X-API-Key, in constant time, with the sha256: "
                                   "hashes in .conflux/api-keys.toml; the file never holds a "
                                   "key itself.")
    commands = p.add_subparsers(dest="auth_command", metavar="SUBCOMMAND", required=True)
    h = commands.add_parser("hash-key", help="print the sha256: hash of an API key",
                            description="Print sha256:<hex> of KEY for a [[keys]] entry of "
                                        "api-keys.toml. Pass - to read the key from standard "
                                        "input (or a hidden prompt), so it stays out of shell "
                                        "history. Use a long random key, e.g. from python -c "
                                        "'import secrets; print(secrets.token_urlsafe(32))'.")
    h.add_argument("key", metavar="KEY", help="the API key, or - to read it from stdin")
    h.set_defaults(handler=run_hash_key)


def run_hash_key(args):
    import getpass

    from conflux.auth import hash_key

    key = args.key
    if key == "-":
        key = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.read()
        key = key.strip()
    if not key:
        raise InputError("no key given (pass KEY, or - and the key on standard input)")
    print(hash_key(key))
    if len(key) < MIN_KEY_LENGTH:
        # NOTE: a warning, not a refusal: placeholder keys in examples and tests must still
        # hash, and the hash is printed either way for whoever already deployed the key.
        print(f"conflux auth: warning: a key of {len(key)} characters is guessable from its "
              f"hash; use at least {MIN_KEY_LENGTH} random characters (e.g. python -c 'import "
              "secrets; print(secrets.token_urlsafe(32))')", file=sys.stderr)

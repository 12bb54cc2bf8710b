"""conflux keys: Ed25519 signing keys and the project's key registry (keys.json)."""

import os

from conflux.cli._output import add_json, print_json, table


def add_parser(sub):
    p = sub.add_parser(
        "keys", help="Ed25519 signing keys and the key registry",
        description="Signing keys prove who asked for a change: operations signed with a key "
                    "of the registry (.conflux/keys.json) are checked by the CLI, the daemon and "
                    "'conflux audit verify'. See 'conflux set --sign-key'.")
    cmds = p.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    g = cmds.add_parser("generate", help="make a key pair; the private key goes to a file",
                        description="Generate an Ed25519 key pair. The private key is written "
                                    "to FILE (PKCS#8 PEM, mode 0600, never over an existing "
                                    "file); the public key is printed, with the command that "
                                    "registers it.")
    g.add_argument("--actor", required=True, metavar="[CLASS:]ID", help="whose key it is")
    g.add_argument("--output", "-o", required=True, metavar="FILE.pem")
    g.add_argument("--register", action="store_true",
                   help="also register it in this project's registry")
    g.add_argument("--key-id", help="the id to register it under (default: ACTOR-<8 hex>)")
    add_json(g)
    g.set_defaults(handler=generate)
    r = cmds.add_parser("register", help="add a public key to the registry",
                        description="Register a public key: from now on, operations of ACTOR "
                                    "signed with it are accepted.")
    r.add_argument("--key-id", required=True)
    r.add_argument("--actor", required=True, metavar="[CLASS:]ID")
    r.add_argument("--public-key", required=True, metavar="BASE64",
                   help="the 32-byte Ed25519 public key, base64")
    add_json(r)
    r.set_defaults(handler=register)
    ls = cmds.add_parser("list", help="the registered keys",
                         description="List the registered keys, revoked ones included.")
    add_json(ls)
    ls.set_defaults(handler=list_)
    rv = cmds.add_parser("revoke", help="revoke a key",
                         description="Revoke a key: signatures made with it are refused from "
                                     "now on, and those made before stay valid in audits.")
    rv.add_argument("key_id", metavar="ID")
    rv.add_argument("--reason", default="", help="why (kept in the registry)")
    add_json(rv)
    rv.set_defaults(handler=revoke)


def _registry(args):
    from conflux.engine import project_root
    from conflux.signing import REGISTRY_FILE, Registry

    return Registry(os.path.join(project_root(args.dir), REGISTRY_FILE))


def _show(key) -> dict:
    from dataclasses import asdict

    return asdict(key)


def generate(args):
    import hashlib

    from nacl.signing import SigningKey

    from conflux.actors import Actor
    from conflux.signing import public_key_text, write_private_key

    actor = Actor.parse(args.actor)
    registry = _registry(args) if args.register else None
    seed = SigningKey.generate()
    public = public_key_text(seed)
    key_id = args.key_id or f"{actor.id}-{hashlib.sha256(bytes(seed.verify_key)).hexdigest()[:8]}"
    write_private_key(args.output, bytes(seed))
    registered = registry.register(key_id, args.actor, public) if registry else None
    if args.json:
        print_json({"key_id": key_id, "actor": args.actor, "public_key": public,
                    "private_key_file": args.output, "registered": registered is not None})
        return 0
    print(f"private key written to {args.output} (mode 0600): keep it secret")
    print(f"public key  {public}")
    if registered:
        print(f"registered as {key_id}")
    else:
        print(f"register it:  conflux keys register --key-id {key_id} --actor {args.actor} "
              f"--public-key {public}")
    return 0


def register(args):
    key = _registry(args).register(args.key_id, args.actor, args.public_key)
    if args.json:
        print_json(_show(key))
    else:
        print(f"registered {key.key_id} for {key.actor} at {key.created}")
    return 0


def list_(args):
    keys = list(_registry(args).refresh().keys.values())
    if args.json:
        print_json([_show(k) for k in keys])
        return 0
    if not keys:
        print("no keys registered")
        return 0
    print(table([[k.key_id, k.actor, k.created,
                  f"revoked {k.revoked}" + (f" ({k.reason})" if k.reason else "")
                  if k.revoked else "valid"] for k in keys], indent=""))
    return 0


def revoke(args):
    key = _registry(args).revoke(args.key_id, args.reason)
    if args.json:
        print_json(_show(key))
    else:
        print(f"revoked {key.key_id} ({key.actor}) at {key.revoked}")
    return 0

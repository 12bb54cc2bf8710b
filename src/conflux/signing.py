"""Signed operations: Ed25519 keys (pynacl), the key registry, and the canonical encoding.

**What is signed.** The content of an operation, encoded canonically (``canonical``): a
msgpack array, in this order, of

    "conflux-op/1", op id, type, env, entity id, field, value, actor id, intent, hlc, base,
    override

where ``field`` is nil for ``delete_entity``; ``value`` is the value of a ``set_field`` or
``resolve``, the elements of an ``add_elements`` or ``remove_elements`` (deduplicated and
sorted by their canonical bytes), else nil; ``hlc`` the packed 64-bit HLC (an unsigned int);
``base`` the sorted, deduplicated op ids, or nil; ``override`` a bool. The values are in their
normal form (durations in milliseconds, refs as full ids: what the store logs), since the
log is what ``audit verify`` checks against.

**Canonical msgpack.** msgpack has no canonical form of its own; Conflux's is: integers in
their shortest encoding (-2^63 .. 2^64-1), floats always as 64-bit (finite only), text as str
(valid UTF-8, never bin), arrays as arrays, maps with text keys only, sorted by their UTF-8
bytes, no repeats; nil, true, false. Anything else (bytes, NaN, other key types) is refused,
so one content has exactly one encoding. The signature is Ed25519 over those bytes, sent and
stored as base64 with the id of the key in the registry.

**The registry** (``.conflux/keys.json``): per key its id, the actor it belongs to (an id, or
``class:id``), the public key (base64 of the 32 raw bytes), when it was registered and, once
revoked, when and why. A key signs for its actor only, and only while it is valid: from its
registration until its revocation.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import math
import os
import re
import struct
import time
from dataclasses import asdict, dataclass

from conflux.codec import packb
from conflux.errors import InputError, NotFound, PermissionDenied

__all__ = ["canonical", "op_content", "Registry", "Key", "SignatureRefused", "load_private_key",
           "write_private_key", "public_key_text", "sign_op", "REGISTRY_FILE"]

REGISTRY_FILE = "keys.json"
_DOMAIN = "conflux-op/1"
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
# PKCS#8 for Ed25519 (RFC 8410): this prefix, then the 32-byte seed
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")


class SignatureRefused(PermissionDenied):
    """A signature that does not hold: bad, from an unknown or revoked key, or another
    actor's key; or a missing one where ``config.toml`` requires it."""

    code = "signature_refused"


# ---------------------------------------------------------------------------------------------
# canonical encoding


def canonical(value, *, max_depth: int = 64) -> bytes:
    """The canonical msgpack bytes of a value (see the module's documentation); nested at
    most ``max_depth`` levels (an audit line holds a value one or more levels down)."""
    out = bytearray()
    _encode(value, out, 0, max_depth)
    return bytes(out)


def _encode(value, out: bytearray, depth: int, limit: int = 64) -> None:
    if depth > limit:
        raise InputError(f"signed content nested deeper than {limit} levels")
    if value is None or value is True or value is False or isinstance(value, int):
        if isinstance(value, int) and not isinstance(value, bool) and \
                not -(1 << 63) <= value < (1 << 64):
            raise InputError(f"signed content: {value} is outside the 64-bit range")
        out += packb(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"signed content: {value!r} is not a finite number")
        out += b"\xcb" + struct.pack(">d", value)
    elif isinstance(value, str):
        try:
            out += packb(value, use_bin_type=True)
        except UnicodeEncodeError:
            raise InputError("signed content: text that is not valid UTF-8") from None
    elif isinstance(value, (list, tuple)):
        out += _header(len(value), 0x90, 0xdc, 0xdd)
        for item in value:
            _encode(item, out, depth + 1, limit)
    elif isinstance(value, dict):
        keys = []
        for key in value:
            if not isinstance(key, str):
                raise InputError(f"signed content: map keys must be text, got {key!r}")
            keys.append((key.encode("utf-8", "strict"), key))
        keys.sort()
        out += _header(len(keys), 0x80, 0xde, 0xdf)
        for raw, key in keys:
            _encode(key, out, depth + 1, limit)
            _encode(value[key], out, depth + 1, limit)
    else:
        raise InputError(f"signed content: {type(value).__name__} has no canonical encoding")


def _header(n: int, fix: int, b16: int, b32: int) -> bytes:
    if n < 16:
        return bytes([fix | n])
    if n < 1 << 16:
        return bytes([b16]) + struct.pack(">H", n)
    return bytes([b32]) + struct.pack(">I", n)


def op_content(*, op_id: str, type: str, env: str, entity_id: str, field, value, actor: str,
               intent: str, hlc: int, base, override: bool) -> bytes:
    """The canonical bytes an operation's signature covers."""
    flat = _scalar(value) or (isinstance(value, list) and all(map(_scalar, value)))
    if type in ("add_elements", "remove_elements") and isinstance(value, list):
        unique = {(_packb(v) if flat else canonical(v)): v for v in value}
        value = [unique[k] for k in sorted(unique)]
    base = sorted(set(base)) if base else None
    content = [_DOMAIN, op_id, type, env, entity_id, field, value, actor, intent or "",
               int(hlc), base, bool(override)]
    if flat:
        # PERF: without maps, msgpack's own encoding is the canonical one (shortest integers,
        # 64-bit floats, str for text): one C call instead of a walk in Python
        try:
            return _packb(content)
        except (OverflowError, ValueError, TypeError):
            pass  # out of range, or not UTF-8: canonical() names what is wrong
    return canonical(content)


def _scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, str)) or (
        isinstance(value, float) and math.isfinite(value))


def _packb(value) -> bytes:
    return packb(value, use_bin_type=True)


def content_of_op(engine, op) -> bytes:
    """``op_content`` of a core ``Op`` (accepted, or read back from the log)."""
    kind = engine.core.OP_NAMES[op.type]
    value = op.elements if kind in ("add_elements", "remove_elements") else op.value
    return op_content(op_id=op.op_id, type=kind, env=op.env, entity_id=op.entity,
                      field=op.field or None, value=value, actor=op.actor, intent=op.intent,
                      hlc=op.hlc, base=op.base, override=op.override)


# ---------------------------------------------------------------------------------------------
# keys


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise InputError(f"{what} is not base64") from None


def write_private_key(path: str, seed: bytes) -> None:
    """A PKCS#8 PEM file (as OpenSSL writes Ed25519 keys), mode 0600, never over a file.
    Missing parent directories are made, readable by their owner only (``~/.conflux/keys/``
    on a new machine)."""
    body = base64.encodebytes(_PKCS8_PREFIX + seed).decode()
    pem = f"-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n"
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot make its directory: {exc.strerror or exc}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"{path} already exists: a key file is never overwritten") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)  # a truncated key file would only fail later, less clearly
        from conflux.errors import OutputError

        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}; nothing was left "
                          "there") from None


def public_key_text(signing_key) -> str:
    """The public half of a ``nacl.signing.SigningKey`` as the registry holds it (base64)."""
    return _b64(bytes(signing_key.verify_key))


def load_private_key(path: str):
    """The ``nacl.signing.SigningKey`` of a PEM file written by ``keys generate`` (or
    OpenSSL's ``genpkey -algorithm ed25519``)."""
    from nacl.signing import SigningKey

    try:
        with open(path) as handle:
            text = handle.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the signing key: {exc.strerror or exc}") \
            from None
    found = re.search(r"-----BEGIN PRIVATE KEY-----(.*?)-----END PRIVATE KEY-----", text, re.S)
    der = _unb64("".join(found[1].split()), f"{path}") if found else b""
    if len(der) != 48 or not der.startswith(_PKCS8_PREFIX):
        raise InputError(f"{path}: not an Ed25519 private key in PKCS#8 PEM form")
    return SigningKey(der[len(_PKCS8_PREFIX):])


@dataclass
class Key:
    key_id: str
    actor: str
    public_key: str
    created: str
    revoked: str | None = None
    reason: str | None = None

    def owned_by(self, actor_id: str, actor_class: str) -> bool:
        return self.actor in (actor_id, f"{actor_class}:{actor_id}")

    def valid_at(self, when_ms: int) -> bool:
        created, revoked = self._times()
        return created <= when_ms and (revoked is None or when_ms < revoked)

    def _times(self) -> tuple:
        cached = self.__dict__.get("_cached")
        if cached is None or cached[0] != (self.created, self.revoked):
            cached = ((self.created, self.revoked),
                      (_ms(self.created), None if self.revoked is None else _ms(self.revoked)))
            self.__dict__["_cached"] = cached
        return cached[1]

    def verify_key(self):
        from nacl.signing import VerifyKey

        return VerifyKey(base64.b64decode(self.public_key))


def _check_key(key: Key) -> None:
    """A registry entry usable when a signature is checked (a hand-edited file could hold a
    number for a date, or a key that is not base64): ``ValueError`` naming what is wrong."""
    for name in ("key_id", "actor", "public_key", "created"):
        if not isinstance(getattr(key, name), str):
            raise ValueError(f"key {key.key_id!r}: {name} must be text")
    for name in ("revoked", "reason"):
        if getattr(key, name) is not None and not isinstance(getattr(key, name), str):
            raise ValueError(f"key {key.key_id!r}: {name} must be text")
    try:
        raw = base64.b64decode(key.public_key, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"key {key.key_id!r}: public_key must be an Ed25519 public key "
                         "(32 bytes, base64)")
    key.valid_at(0)  # created and revoked as ISO times, else ValueError


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _ms(text: str) -> int:
    import datetime as dt

    return int(dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=dt.timezone.utc).timestamp() * 1000 + 0.5)


class Registry:
    """The key registry, a JSON file; reloaded whenever the file changes (a daemon's workers
    see a registration or a revocation at their next request)."""

    def __init__(self, path: str):
        self.path = path
        self._stamp = None
        self._good = False  # a good file was read: later bad versions keep its keys
        self.keys: dict[str, Key] = {}
        self._verifiers: dict[str, object] = {}

    def refresh(self) -> "Registry":
        """Read the file again if it changed. The first read of a bad file raises
        ``InputError``; once a good one was read, a file that has become bad is logged (once
        per change) and the keys read last stay in force, so a daemon keeps checking
        signatures while someone fixes it."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            try:
                keys = self._read() if stamp else {}
            except InputError as exc:
                if not self._good:
                    raise
                import logging

                self._stamp = stamp
                logging.getLogger("conflux.signing").error(
                    "%s; the keys read before stay in force until the file is fixed", exc)
                return self
            self.keys, self._verifiers, self._stamp, self._good = keys, {}, stamp, True
        return self

    def _read(self) -> dict[str, Key]:
        try:
            with open(self.path) as handle:
                data = json.load(handle)
            keys = {}
            for entry in data["keys"]:
                key = Key(**entry)
                _check_key(key)
                keys[key.key_id] = key
            return keys
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{self.path}: not a Conflux key registry ({exc})") from None

    def get(self, key_id: str) -> Key:
        key = self.refresh().keys.get(key_id)
        if key is None:
            raise NotFound(f"no key {key_id!r} in {self.path}")
        return key

    def by_public_key(self, public_key: str) -> Key | None:
        for key in self.refresh().keys.values():
            if key.public_key == public_key:
                return key
        return None

    def verifier(self, key_id: str):
        found = self._verifiers.get(key_id)
        if found is None:
            found = self._verifiers[key_id] = self.keys[key_id].verify_key()
        return found

    # -- changes (one writer at a time, the file replaced whole) ------------------------------

    @contextlib.contextmanager
    def _editing(self):
        with open(self.path + ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._stamp = None
            keys = self.refresh().keys
            yield keys
            data = {"keys": [asdict(k) for k in keys.values()]}
            tmp = f"{self.path}.tmp{os.getpid()}"
            with open(tmp, "w") as handle:
                json.dump(data, handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            self._stamp = None

    def register(self, key_id: str, actor: str, public_key: str, *, now_ms=None) -> Key:
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            raise InputError(f"key id {key_id!r}: letters, digits and _ . : @ -, at most 128")
        from conflux.actors import Actor

        Actor.parse(actor)  # checks the id (and the class, if given)
        raw = _unb64(public_key, "--public-key")
        if len(raw) != 32:
            raise InputError(f"--public-key: an Ed25519 public key is 32 bytes, got {len(raw)}")
        with self._editing() as keys:
            if key_id in keys:
                raise InputError(f"key id {key_id!r} is already registered (to "
                                 f"{keys[key_id].actor}); ids are never reused")
            for other in keys.values():
                if other.public_key == public_key:
                    raise InputError(f"this public key is already registered as "
                                     f"{other.key_id!r}")
            key = Key(key_id, actor, public_key, _iso(now_ms or int(time.time() * 1000)))
            keys[key_id] = key
        return key

    def revoke(self, key_id: str, reason: str = "", *, now_ms=None) -> Key:
        with self._editing() as keys:
            key = keys.get(key_id)
            if key is None:
                raise NotFound(f"no key {key_id!r} in {self.path}")
            if key.revoked is not None:
                raise InputError(f"key {key_id!r} was already revoked at {key.revoked}")
            key.revoked = _iso(now_ms or int(time.time() * 1000))
            key.reason = reason or None
        return key

    # -- checking -----------------------------------------------------------------------------

    def check(self, content: bytes, signature: str, key_id: str, actor_id: str,
              actor_class: str, when_ms: int, *, refresh: bool = True) -> str | None:
        """None if the signature holds, else why not (``refresh=False``: the caller has
        just refreshed the registry, once for a whole batch)."""
        key = (self.refresh() if refresh else self).keys.get(key_id)
        if key is None:
            return f"unknown key {key_id!r}"
        if not key.owned_by(actor_id, actor_class):
            return f"key {key_id!r} belongs to {key.actor}, not {actor_class}:{actor_id}"
        if not key.valid_at(when_ms):
            return (f"key {key_id!r} was revoked at {key.revoked}" if key.revoked and
                    when_ms >= _ms(key.revoked) else
                    f"key {key_id!r} was not registered yet at that time")
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return "the signature is not base64"
        from nacl.exceptions import BadSignatureError

        try:
            self.verifier(key_id).verify(content, raw)
        except (BadSignatureError, ValueError):
            return "the signature does not match the operation"
        return None


def sign_op(op: dict, signing_key, key_id: str, actor_id: str) -> dict:
    """Add ``signature`` and ``key_id`` to a wire operation that has its ``op_id``, ``hlc``
    (packed int) and normal-form value; returns the op."""
    kind = op["type"]
    value = op.get("elements") if kind in ("add_elements", "remove_elements") else op.get("value")
    if kind == "move_entity":  # the place asked for, as the store logs it
        value = [op.get("parent"), op.get("position")]
    content = op_content(op_id=op["op_id"], type=kind, env=op["env"],
                         entity_id=op["entity_id"], field=op.get("field"), value=value,
                         actor=actor_id, intent=op.get("intent") or "", hlc=op["hlc"],
                         base=op.get("base"), override=op.get("override", False))
    op["signature"] = _b64(signing_key.sign(content).signature)
    op["key_id"] = key_id
    return op

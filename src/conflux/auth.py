"""Authentication: which actor is calling (see docs/security.md).

The daemon knows a caller by an API key sent in ``X-API-Key`` or by a verified TLS client
certificate. Both are mapped to an :class:`~conflux.actors.Actor` by ``.conflux/api-keys.toml``;
the actor of every operation is the authenticated one, never one named in a request body.

The file holds only SHA-256 hashes of keys (``conflux auth hash-key -`` prints one), and the
subjects of the client certificates the daemon accepts::

    # .conflux/api-keys.toml
    [[keys]]
    key_hash = "sha256:6b3a55e0261b0304143f805a24924d0c1c44524821305f31d9277843b8a10f4e"
    actor_id = "autoscaler-7"
    actor_class = "autoscaler"
    display_name = "prod autoscaler"    # optional, for people

    [[certificates]]
    subject = "CN=ci-pipeline,O=example"
    actor_id = "ci-pipeline"
    actor_class = "pipeline"
    display_name = "CI runners"         # optional

These are the original Conflux's names. The older short form, ``[[key]]`` with ``hash``,
``actor``, ``class``, ``name`` and ``[[certificate]]`` with ``subject``, ``actor``, ``class``,
``name``, is read too; each entry uses one form throughout.

An actor may hold several keys (to rotate one, add the new key, then remove the old). An actor
id has one class throughout the file. Anything else in the file is refused with its line:
unknown keys, a plaintext key, a hash that is not ``sha256:`` and 64 hex digits, the same hash
or subject twice, a bad actor id or class.

A missing file means no keys and no certificates: every credential is unknown.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any, Iterator

from conflux._tomlfile import TomlFile
from conflux.actors import ACTOR_CLASSES, Actor
from conflux.errors import AuthError, InputError

__all__ = ["hash_key", "ApiKeys", "ApiKey", "CertMap", "Certificate", "parse_subject",
           "load_credentials", "API_KEYS_FILE"]

#: The file's name inside ``.conflux/``.
API_KEYS_FILE = "api-keys.toml"

_PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-fA-F]{64}")
#: Each section as written, with its entry's field names: the internal name (the short form's)
#: to the name written in the file. ``keys``/``certificates`` are the documented form.
_SECTIONS = {
    "keys": ("key", {"hash": "key_hash", "actor": "actor_id", "class": "actor_class",
                     "name": "display_name"}),
    "certificates": ("certificate", {"subject": "subject", "actor": "actor_id",
                                     "class": "actor_class", "name": "display_name"}),
    "key": ("key", {"hash": "hash", "actor": "actor", "class": "class", "name": "name"}),
    "certificate": ("certificate", {"subject": "subject", "actor": "actor", "class": "class",
                                    "name": "name"}),
}
_TOP_KEYS = tuple(_SECTIONS)
# Field names under which people put the key itself; refused with a pointer to hash-key.
_PLAINTEXT_FIELDS = ("key", "api_key", "api-key", "apikey", "secret", "token", "plaintext",
                     "value", "password")


def _utf8(text: str) -> bytes:
    # surrogatepass: a header value with lone surrogates hashes to bytes that match nothing,
    # rather than raising mid-request
    return text.encode("utf-8", "surrogatepass")


def hash_key(key: str) -> str:
    """``sha256:<hex>`` of an API key, the form ``api-keys.toml`` stores.

    Keys should be long random strings (``python -c "import secrets;
    print(secrets.token_urlsafe(32))"``): an unsalted fast hash protects a random key, not a
    guessable one.
    """
    if not isinstance(key, str) or not key:
        raise InputError("an API key must be non-empty text", field="key")
    return _PREFIX + hashlib.sha256(_utf8(key)).hexdigest()


# --------------------------------------------------------------------------------------------
# Entries

@dataclass(frozen=True)
class ApiKey:
    """One ``[[keys]]`` entry: the hash of a key and the actor it authenticates."""

    hash: str
    actor: Actor
    name: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Certificate:
    """One ``[[certificates]]`` entry: a client-certificate subject and its actor."""

    subject: str
    attributes: tuple[tuple[str, str], ...]
    actor: Actor
    name: str = ""
    line: int | None = None


# --------------------------------------------------------------------------------------------
# Certificate subjects

# RFC 4514 short names, and the OpenSSL long names ``getpeercert()`` reports, both lower-cased;
# every name is compared in its long form.
_ATTRIBUTE_ALIASES = {
    "cn": "commonname",
    "o": "organizationname",
    "ou": "organizationalunitname",
    "c": "countryname",
    "l": "localityname",
    "st": "stateorprovincename",
    "street": "streetaddress",
    "dc": "domaincomponent",
    "uid": "userid",
    "e": "emailaddress",
    "email": "emailaddress",
    "sn": "surname",
    "serialnumber": "serialnumber",
}
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_SPECIALS = ',+"\\<>;=# '


def _attribute(name: str) -> str:
    lowered = name.lower()
    return _ATTRIBUTE_ALIASES.get(lowered, lowered)


def parse_subject(text: str) -> tuple[tuple[str, str], ...]:
    """An RFC 4514 distinguished name as a sorted tuple of ``(attribute, value)`` pairs.

    ``CN=ci-pipeline,O=example`` and ``O=example, CN=ci-pipeline`` give the same pairs:
    attribute names are case-insensitive, short (``CN``) or long (``commonName``); values are
    exact (case and inner spaces count). ``\\,``, ``\\+``, ``\\"``, ``\\\\``... and ``\\XX`` hex
    escapes are read; ``+`` (multi-valued RDNs) separates attributes like ``,``. Raises
    ``ValueError`` with what is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a subject must be text like \"CN=ci-pipeline,O=example\"")
    pairs: list[tuple[str, str]] = []
    # each character with whether it was escaped; separators and '=' count only unescaped
    chars: list[tuple[str, bool]] = []
    pending = bytearray()
    i = 0

    def flush():
        if pending:
            try:
                decoded = pending.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("a \\XX escape in the subject is not UTF-8") from None
            chars.extend((c, True) for c in decoded)
            pending.clear()

    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1: i + 3]
            if len(nxt) == 2 and re.fullmatch(r"[0-9A-Fa-f]{2}", nxt):
                pending.append(int(nxt, 16))
                i += 3
                continue
            if nxt[:1] and nxt[0] in _SPECIALS:
                flush()
                chars.append((nxt[0], True))
                i += 2
                continue
            raise ValueError(f"bad escape at position {i + 1} (use \\, \\+ \\\" \\\\ \\< \\> "
                             "\\; \\= \\# or \\XX hex)")
        flush()
        chars.append((ch, False))
        i += 1
    flush()

    parts: list[list[tuple[str, bool]]] = [[]]
    for ch, escaped in chars:
        if ch in ",+" and not escaped:
            parts.append([])
        else:
            parts[-1].append((ch, escaped))
    for part in parts:
        eq = next((k for k, (ch, escaped) in enumerate(part) if ch == "=" and not escaped), None)
        if eq is None:
            raise ValueError(f"{_joined(part).strip() or 'an empty part'!r} is not "
                             "attribute=value")
        name, value = _joined(_stripped(part[:eq])), _stripped(part[eq + 1:])
        if not _ATTRIBUTE_NAME.fullmatch(name):
            raise ValueError(f"attribute {name!r} is not a name like CN, O, OU, C, DC, UID "
                             "(OIDs are not accepted)")
        if not value:
            raise ValueError(f"attribute {name} has an empty value")
        if value[0] == ("#", False):
            raise ValueError(f"attribute {name}: hex-encoded (#...) values are not accepted")
        pairs.append((_attribute(name), _joined(value)))
    return tuple(sorted(pairs))


def _joined(part) -> str:
    return "".join(ch for ch, _ in part)


def _stripped(part):
    """A part without its unescaped leading and trailing spaces."""
    start, end = 0, len(part)
    while start < end and part[start] == (" ", False):
        start += 1
    while end > start and part[end - 1] == (" ", False):
        end -= 1
    return part[start:end]


def _peer_attributes(peercert: Any) -> tuple[tuple[str, str], ...] | None:
    """The subject of ``ssl.SSLSocket.getpeercert()``'s dict as sorted pairs, or None."""
    if not isinstance(peercert, dict):
        return None
    subject = peercert.get("subject")
    if not subject:
        return None
    pairs = []
    try:
        for rdn in subject:
            for name, value in rdn:
                pairs.append((_attribute(str(name)), str(value)))
    except (TypeError, ValueError):
        return None
    return tuple(sorted(pairs))


_SHORT_NAMES = {"commonname": "CN", "organizationname": "O", "organizationalunitname": "OU",
                "countryname": "C", "localityname": "L", "stateorprovincename": "ST",
                "streetaddress": "STREET", "domaincomponent": "DC", "userid": "UID"}


def _escape(value: str) -> str:
    return re.sub(r'([,+"\\<>;=])', r"\\\1", value)


def _peer_subject_text(peercert: dict) -> str:
    """The peer's subject in RFC 4514 order and short names, for messages."""
    parts = []
    for rdn in reversed(peercert["subject"]):
        parts.append("+".join(f"{_SHORT_NAMES.get(_attribute(name), name)}={_escape(value)}"
                              for name, value in rdn))
    return ",".join(parts)


# --------------------------------------------------------------------------------------------
# The file

def load_credentials(path: str) -> tuple[ApiKeys, CertMap]:
    """Both sections of ``api-keys.toml`` from one read of the file."""
    keys, certificates = _load(str(path))
    return ApiKeys(keys, str(path)), CertMap(certificates, str(path))


def _load(path: str) -> tuple[list[ApiKey], list[Certificate]]:
    """Both sections of ``api-keys.toml``, checked; a missing file has neither."""
    try:
        doc = TomlFile(path)
    except FileNotFoundError:
        return [], []
    data = doc.data
    for key in data:
        if key not in _TOP_KEYS:
            hint = ""
            if key in _PLAINTEXT_FIELDS or key in ("hash", "key_hash", "actor", "actor_id",
                                                   "subject"):
                hint = " (entries go in [[keys]] or [[certificates]] tables)"
            doc.fail(f"unknown top-level key {key!r} (allowed: [[keys]], [[certificates]])"
                     f"{hint}", line=doc.top_key(key))

    classes: dict[str, tuple[str, int | None]] = {}
    hashes: dict[str, int | None] = {}
    subjects: dict[tuple, int | None] = {}
    api_keys: list[ApiKey] = []
    certificates: list[Certificate] = []
    for section, (kind, names) in _SECTIONS.items():
        for raw, line, span in _read_section(doc, section, names):
            def at(field, line=line, span=span, names=names):
                """The line of ``field`` in this entry, else the entry's first line."""
                return doc.first_line(doc.key(names[field], span) if span else None, line)

            actor = _actor(doc, raw, names, at)
            seen = classes.setdefault(actor.id, (actor.cls, line))
            if seen[0] != actor.cls:
                doc.fail(f"actor {actor.id!r} is class {actor.cls!r} here but {seen[0]!r} in the "
                         f"entry on line {seen[1]}; an actor has one class", line=at("class"),
                         field=names["class"])
            name = raw.get("name", "")
            if not isinstance(name, str):
                doc.fail(f"{names['name']!r} must be text", line=at("name"), field=names["name"])
            if kind == "key":
                digest = _hash(doc, raw, line, names, at)
                if digest in hashes:
                    doc.fail(f"the same key hash is already listed in the entry on line "
                             f"{hashes[digest]}", line=at("hash"), field=names["hash"])
                hashes[digest] = line
                api_keys.append(ApiKey(digest, actor, name, line))
            else:
                subject = raw.get("subject")
                if subject is None:
                    doc.fail(f"this [[{section}]] has no 'subject' (e.g. subject = "
                             "\"CN=ci-pipeline,O=example\")", line=line, field="subject")
                try:
                    attributes = parse_subject(subject)
                except ValueError as exc:
                    doc.fail(f"subject {subject!r}: {exc}", line=at("subject"), field="subject")
                if attributes in subjects:
                    doc.fail(f"the same subject is already mapped in the entry on line "
                             f"{subjects[attributes]}", line=at("subject"), field="subject")
                subjects[attributes] = line
                certificates.append(Certificate(subject, attributes, actor, name, line))
    return api_keys, certificates


def _read_section(doc: TomlFile, section: str, names: dict[str, str]) -> list[tuple]:
    """The entries of ``[[section]]``, each with the line it starts on and where it is
    written, with their fields under the internal names; unknown fields refused."""
    entries = doc.data.get(section, [])
    if not isinstance(entries, list):
        doc.fail(f"{section!r} must be a list of tables, written [[{section}]]",
                 line=doc.top_key(section))
    allowed = tuple(names.values())
    internal = {written: name for name, written in names.items()}
    out = []
    for index, raw in enumerate(entries):
        span = doc.table(section, occurrence=index + 1, array=True)
        if span is not None:
            line = doc.line_at(span[0])
        else:  # an inline array: point at the entry's first string, else at the key
            first = next((v for v in raw.values() if isinstance(v, str)), None) \
                if isinstance(raw, dict) else None
            line = doc.first_line(doc.literal(first), doc.top_key(section))
        if not isinstance(raw, dict):
            doc.fail(f"each [[{section}]] entry must be a table", line=line)
        for field in raw:
            if field in allowed:
                continue
            where = doc.first_line(doc.key(field, span), line)
            if "hash" in names and field in _PLAINTEXT_FIELDS:
                doc.fail(f"{field!r} holds a plaintext key: api-keys.toml stores only hashes; "
                         f"put {names['hash']} = \"<output of 'conflux auth hash-key -'>\" and "
                         "delete the key from the file", line=where, field=field)
            other = next((form for form, (_, its) in _SECTIONS.items()
                          if form != section and field in its.values()
                          and its.keys() == names.keys()), None)
            hint = (f"; {field!r} belongs to the [[{other}]] form, and an entry uses one form "
                    "throughout" if other else "")
            doc.fail(f"unknown field {field!r} in [[{section}]] (allowed: "
                     f"{', '.join(allowed)}){hint}", line=where, field=field)
        out.append(({internal[k]: v for k, v in raw.items()}, line, span))
    return out


def _actor(doc: TomlFile, raw: dict, names: dict[str, str], at) -> Actor:
    ident, cls = raw.get("actor"), raw.get("class")
    id_key, class_key = names["actor"], names["class"]
    if not isinstance(ident, str):
        doc.fail(f"{id_key!r} must be the actor id as text, e.g. {id_key} = \"autoscaler-7\"",
                 line=at("actor"), field=id_key)
    if ":" in ident:
        doc.fail(f"{id_key} {ident!r}: write the id alone and the class in {class_key!r} (e.g. "
                 f"{id_key} = \"{ident.partition(':')[2]}\", {class_key} = "
                 f"\"{ident.partition(':')[0]}\")", line=at("actor"), field=id_key)
    if not isinstance(cls, str):
        doc.fail(f"{class_key!r} must be one of {', '.join(ACTOR_CLASSES)}", line=at("class"),
                 field=class_key)
    try:
        return Actor(ident, cls)
    except InputError as exc:
        field = "actor" if cls in ACTOR_CLASSES else "class"
        doc.fail(exc.message, line=at(field), field=names[field])


def _hash(doc: TomlFile, raw: dict, line: int | None, names: dict[str, str], at) -> str:
    value = raw.get("hash")
    key = names["hash"]
    if value is None:
        doc.fail(f"this entry has no {key!r} ({key} = \"<output of 'conflux auth hash-key -'>\")",
                 line=line, field=key)
    line = at("hash")
    if not isinstance(value, str):
        doc.fail(f"{key!r} must be text: sha256:<64 hex digits>", line=line, field=key)
    algorithm, sep, digest = value.partition(":")
    if not sep:
        doc.fail(f"{key!r} looks like a plaintext key: api-keys.toml stores only hashes; put "
                 "the output of 'conflux auth hash-key -' (sha256:<64 hex digits>) and delete "
                 "the key from the file", line=line, field=key)
    if algorithm.lower() != "sha256":
        doc.fail(f"{key!r} uses {algorithm!r}; only sha256:<64 hex digits> is accepted",
                 line=line, field=key)
    if not _HEX.fullmatch(digest):
        doc.fail(f"{key!r} is not sha256:<64 hex digits> (got {len(digest)} characters after "
                 "'sha256:')", line=line, field=key)
    return _PREFIX + digest.lower()


# --------------------------------------------------------------------------------------------
# API keys

class ApiKeys:
    """The API keys of ``api-keys.toml``, checked in constant time."""

    def __init__(self, keys: list[ApiKey] | tuple[ApiKey, ...] = (), path: str | None = None):
        self.path = path
        self._keys = tuple(keys)
        # ascii bytes of the hex digests, compared with hmac.compare_digest
        self._digests = tuple(key.hash[len(_PREFIX):].encode("ascii") for key in self._keys)

    @classmethod
    def load(cls, path: str) -> "ApiKeys":
        """Read ``[[keys]]`` entries from ``path`` (the whole file is checked); a missing file
        gives no keys. Raises ``InputError`` naming the file and line of anything wrong."""
        return cls(_load(str(path))[0], str(path))

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[ApiKey]:
        return iter(self._keys)

    def authenticate(self, presented: str | None) -> Actor:
        """The actor of a presented key; ``AuthError`` (401) for a missing or unknown key.

        The presented key is hashed and its digest compared with every stored digest by
        ``hmac.compare_digest``, without stopping at a match, so the time taken depends on
        neither the key nor where its entry is in the file.
        """
        if presented is None or presented == "":
            raise AuthError("no credentials: send an API key in the X-API-Key header or use "
                            "a client certificate")
        if not isinstance(presented, str):
            raise AuthError("the API key must be text")
        digest = hashlib.sha256(_utf8(presented)).hexdigest().encode("ascii")
        # NOTE: no early exit; every stored digest is compared, and the match is picked after.
        matches = [hmac.compare_digest(stored, digest) for stored in self._digests]
        if True in matches:
            return self._keys[matches.index(True)].actor
        raise AuthError("unknown API key")


# --------------------------------------------------------------------------------------------
# Client certificates

class CertMap:
    """Client-certificate subjects mapped to actors (``[[certificates]]`` in api-keys.toml).

    Matching rule: the certificate's whole subject must equal the configured one as a set of
    attributes. Order does not matter (``CN=a,O=b`` equals ``O=b,CN=a``, and equals OpenSSL's
    ``/O=b/CN=a``); attribute names are case-insensitive and may be short or long
    (``CN``/``commonName``); values are compared exactly. A certificate with an attribute the
    entry does not name (say an extra ``OU``) does not match. The certificate itself must have
    been verified against the daemon's client CA (``--client-ca``) before it gets here: this
    map only names the actor of a certificate the CA vouched for.
    """

    def __init__(self, certificates: list[Certificate] | tuple[Certificate, ...] = (),
                 path: str | None = None):
        self.path = path
        self._certificates = tuple(certificates)
        self._by_subject = {cert.attributes: cert for cert in self._certificates}

    @classmethod
    def load(cls, path: str) -> "CertMap":
        """Read ``[[certificates]]`` entries from ``path`` (the whole file is checked); a missing
        file maps no certificate."""
        return cls(_load(str(path))[1], str(path))

    def __len__(self) -> int:
        return len(self._certificates)

    def __iter__(self) -> Iterator[Certificate]:
        return iter(self._certificates)

    def actor_for(self, peercert: dict | None) -> Actor:
        """The actor of a peer certificate in the dict form of ``SSLSocket.getpeercert()``;
        ``AuthError`` (401) when there is none (or an empty dict: not verified) or its subject
        is not mapped."""
        attributes = _peer_attributes(peercert)
        if attributes is None:
            raise AuthError("no credentials: send an API key in the X-API-Key header or a "
                            "verified client certificate")
        return self._actor(attributes, lambda: _peer_subject_text(peercert))

    def actor_for_subject(self, subject: str) -> Actor:
        """The actor of a verified peer certificate whose subject is given as text (RFC 4514,
        as gRPC's ``x509_subject`` holds it); ``AuthError`` as ``actor_for``."""
        try:
            attributes = parse_subject(subject)
        except ValueError:
            raise AuthError(f"client certificate subject {subject!r} cannot be read") from None
        return self._actor(attributes, lambda: subject)

    def _actor(self, attributes, shown) -> Actor:
        cert = self._by_subject.get(attributes)
        if cert is None:
            raise AuthError(f"client certificate {shown()} is not mapped to an actor in "
                            "api-keys.toml")
        return cert.actor

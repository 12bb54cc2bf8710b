"""Authentication: API-key hashes, constant-time checks, client-certificate subjects, the
``api-keys.toml`` loader's refusals, and ``conflux auth hash-key``."""

from __future__ import annotations

import hashlib
import hmac
import io
import shutil
import ssl
import subprocess
import textwrap

import pytest

from conflux.actors import Actor
from conflux.auth import ApiKeys, CertMap, hash_key, parse_subject
from conflux.errors import AuthError, ConfluxError, InputError

from conftest import run_cli

KEY_A = "a" * 20 + "-autoscaler"
KEY_B = "b" * 20 + "-pipeline"
KEY_C = "c" * 20 + "-zara"


def write(tmp_path, text: str, name: str = "api-keys.toml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture
def keys_file(tmp_path) -> str:
    return write(tmp_path, f"""\
        # API keys of the daemon
        [[key]]
        hash = "{hash_key(KEY_A)}"
        actor = "autoscaler-7"
        class = "autoscaler"
        name = "prod autoscaler"

        [[key]]
        hash = "{hash_key(KEY_B)}"
        actor = "ci-pipeline"
        class = "pipeline"

        [[key]]
        hash = "{hash_key(KEY_C).upper().replace('SHA256:', 'sha256:')}"
        actor = "zara"
        class = "human"

        [[certificate]]
        subject = "CN=ci-pipeline,O=example"
        actor = "ci-pipeline"
        class = "pipeline"

        [[certificate]]
        subject = "commonName=deploy\\\\, bot + OU=ops, o=example"
        actor = "deploy-bot"
        class = "service"
        name = "deploy bot"
        """)


def peercert(*pairs: tuple[str, str]) -> dict:
    """The dict form of ``SSLSocket.getpeercert()``: one RDN per pair, in DER order."""
    return {"subject": tuple(((name, value),) for name, value in pairs),
            "issuer": ((("commonName", "test CA"),),), "version": 3}


# ------------------------------------------------------------------------------------------
# hashing


def test_hash_key_is_sha256_hex():
    assert hash_key("abc") == ("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff"
                               "61f20015ad")
    assert hash_key("ключ") == "sha256:" + hashlib.sha256("ключ".encode()).hexdigest()


@pytest.mark.parametrize("bad", ["", None, b"bytes"])
def test_hash_key_refuses_empty_or_non_text(bad):
    with pytest.raises(InputError):
        hash_key(bad)


# ------------------------------------------------------------------------------------------
# API keys


def test_authenticate_maps_each_key_to_its_actor(keys_file):
    keys = ApiKeys.load(keys_file)
    assert len(keys) == 3
    assert keys.authenticate(KEY_A) == Actor("autoscaler-7", "autoscaler")
    assert keys.authenticate(KEY_B) == Actor("ci-pipeline", "pipeline")
    assert keys.authenticate(KEY_C) == Actor("zara", "human")  # upper-case hex is accepted
    assert [k.name for k in keys] == ["prod autoscaler", "", ""]
    assert [k.line for k in keys] == [2, 8, 13]


@pytest.mark.parametrize("presented", ["not-a-key-at-all-1234", KEY_A + " ", KEY_A.upper(),
                                       "\udcff-lone-surrogate"])
def test_unknown_key_is_401(keys_file, presented):
    with pytest.raises(AuthError) as info:
        ApiKeys.load(keys_file).authenticate(presented)
    err = info.value
    assert err.http_status == 401 and err.code == "unauthorized"
    assert isinstance(err, PermissionError) and isinstance(err, ConfluxError)
    assert err.to_dict() == {"error": {"code": "unauthorized", "message": "unknown API key"}}


@pytest.mark.parametrize("presented", [None, ""])
def test_missing_key_is_401(keys_file, presented):
    with pytest.raises(AuthError, match="no credentials"):
        ApiKeys.load(keys_file).authenticate(presented)


@pytest.mark.parametrize("presented", [KEY_A, KEY_C, "unknown-key-0123456789"])
def test_every_stored_hash_is_compared_in_constant_time(keys_file, monkeypatch, presented):
    """hmac.compare_digest is called once per stored key whichever entry matches (first,
    last or none): no early exit that would time the match's position."""
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = ApiKeys.load(keys_file)
    try:
        keys.authenticate(presented)
    except AuthError:
        pass
    assert len(calls) == len(keys) == 3
    presented_digest = hashlib.sha256(presented.encode()).hexdigest().encode()
    assert all(b == presented_digest for _, b in calls)


def test_missing_file_means_no_keys(tmp_path):
    keys = ApiKeys.load(str(tmp_path / "nope.toml"))
    assert len(keys) == 0
    with pytest.raises(AuthError, match="unknown API key"):
        keys.authenticate(KEY_A)
    assert len(CertMap.load(str(tmp_path / "nope.toml"))) == 0


def test_one_actor_may_hold_several_keys(tmp_path):
    path = write(tmp_path, f"""\
        [[key]]
        hash = "{hash_key(KEY_A)}"
        actor = "autoscaler-7"
        class = "autoscaler"
        [[key]]
        hash = "{hash_key(KEY_B)}"
        actor = "autoscaler-7"
        class = "autoscaler"
        """)
    keys = ApiKeys.load(path)
    assert keys.authenticate(KEY_A) == keys.authenticate(KEY_B)


GOOD = f'hash = "{hash_key(KEY_A)}"\nactor = "autoscaler-7"\nclass = "autoscaler"\n'
def test_the_original_conflux_form_is_read(tmp_path):
    # [[keys]] with key_hash / actor_id / actor_class, as the original Conflux documents it,
    # beside the short form in the same file
    path = write(tmp_path, f"""\
        [[keys]]
        key_hash = "{hash_key(KEY_B)}"
        actor_id = "ci-pipeline"
        actor_class = "pipeline"
        display_name = "GitHub Actions CI"

        [[keys]]
        key_hash = "{hash_key(KEY_C)}"
        actor_id = "reconciler"
        actor_class = "system"

        [[key]]
        hash = "{hash_key(KEY_A)}"
        actor = "autoscaler-7"
        class = "autoscaler"

        [[certificates]]
        subject = "CN=deployer,O=example"
        actor_id = "deployer"
        actor_class = "operator"
        """)
    keys = ApiKeys.load(path)
    assert keys.authenticate(KEY_B) == Actor("ci-pipeline", "pipeline")
    assert keys.authenticate(KEY_C) == Actor("reconciler", "system")
    assert keys.authenticate(KEY_A) == Actor("autoscaler-7", "autoscaler")
    assert [k.name for k in keys] == ["GitHub Actions CI", "", ""]
    certs = CertMap.load(path)
    assert certs.actor_for(peercert(("organizationName", "example"),
                                    ("commonName", "deployer"))) == Actor("deployer", "operator")


NEW = f'key_hash = "{hash_key(KEY_A)}"\nactor_id = "autoscaler-7"\nactor_class = "autoscaler"\n'


@pytest.mark.parametrize("text, line, message", [
    ('[[keys]]\nactor_id = "a"\nactor_class = "human"\n', 1, "has no 'key_hash'"),
    ('[[keys]]\nkey_hash = "hunter2-hunter2-hunter2"\nactor_id = "a"\nactor_class = "human"\n',
     2, "'key_hash' looks like a plaintext key"),
    ("[[keys]]\n" + NEW.replace('actor_class = "autoscaler"\n', 'class = "autoscaler"\n'), 4,
     "'class' belongs to the [[key]] form"),
    ("[[keys]]\n" + NEW.replace('"autoscaler"', '"robot"'), 4, "actor class 'robot'"),
    ("[[keys]]\n" + NEW + 'api_key = "hunter2-hunter2"\n', 5,
     "put key_hash = \"<output of"),
    ("[[keys]]\n" + NEW + "[[key]]\n" + GOOD, 6, "already listed in the entry on line 1"),
    ('[[certificates]]\nsubject = "CN=a"\nactor = "a"\nactor_class = "human"\n', 3,
     "'actor' belongs to the [[certificate]] form"),
    ("hash = 1\n", 1, "entries go in [[keys]] or [[certificates]] tables"),
])
def test_original_form_errors_name_its_fields(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        ApiKeys.load(path)
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)
    assert message in str(info.value)




@pytest.mark.parametrize("text, line, message", [
    ('[[key]]\nkey = "hunter2-hunter2-hunter2"\nactor = "a"\nclass = "human"\n', 2,
     "plaintext key"),
    ('[[key]]\nhash = "hunter2-hunter2-hunter2"\nactor = "a"\nclass = "human"\n', 2,
     "looks like a plaintext key"),
    ('[[key]]\nhash = "md5:0cc175b9c0f1b6a831c399e269772661"\nactor = "a"\nclass = "human"\n',
     2, "only sha256"),
    ('[[key]]\nhash = "sha256:abc"\nactor = "a"\nclass = "human"\n', 2,
     "not sha256:<64 hex digits>"),
    ('[[key]]\nhash = "sha256:' + "g" * 64 + '"\nactor = "a"\nclass = "human"\n', 2,
     "not sha256:<64 hex digits>"),
    ('[[key]]\nactor = "a"\nclass = "human"\n', 1, "has no 'hash'"),
    ("[[key]]\n" + GOOD + 'colour = "blue"\n', 5, "unknown field 'colour'"),
    ("secret = 1\n[[key]]\n" + GOOD, 1, "unknown top-level key 'secret'"),
    ("[[key]]\n" + GOOD + "\n[[key]]\n" + GOOD.replace("autoscaler-7", "autoscaler-8"), 7,
     "already listed in the entry on line 1"),
    ("[[key]]\n" + GOOD.replace('"autoscaler-7"', '"bad id!"'), 3, "actor id 'bad id!'"),
    ("[[key]]\n" + GOOD.replace('class = "autoscaler"', 'class = "robot"'), 4,
     "actor class 'robot'"),
    ("[[key]]\n" + GOOD.replace('class = "autoscaler"\n', ""), 1, "'class' must be one of"),
    ("[[key]]\n" + GOOD.replace('"autoscaler-7"', '"autoscaler:autoscaler-7"'), 3,
     "write the id alone"),
    ("[[key]]\n" + GOOD + '[[certificate]]\nsubject = "CN=a"\nactor = "autoscaler-7"\n'
     'class = "pipeline"\n', 8, "an actor has one class"),
    ("[[key]]\nhash = = 1\n", 2, "invalid TOML"),
    ('key = "abc"\n', 1, "must be a list of tables"),
    ('[[certificate]]\nactor = "a"\nclass = "human"\n', 1, "has no 'subject'"),
    ('[[certificate]]\nsubject = "CN"\nactor = "a"\nclass = "human"\n', 2,
     "is not attribute=value"),
    ('[[certificate]]\nsubject = "2.5.4.3=x"\nactor = "a"\nclass = "human"\n', 2,
     "OIDs are not accepted"),
    (('[[certificate]]\nsubject = "CN=a,O=b"\nactor = "a"\nclass = "human"\n\n'
      '[[certificate]]\nsubject = "o=b, cn=a"\nactor = "b"\nclass = "human"\n'), 7,
     "already mapped in the entry on line 1"),
    ('[[certificate]]\nsubject = "CN=a"\nactor = "a"\nclass = "human"\nfingerprint = "x"\n',
     5, "unknown field 'fingerprint'"),
])
def test_file_errors_name_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    for loader in (ApiKeys.load, CertMap.load):  # either reader checks the whole file
        with pytest.raises(InputError) as info:
            loader(path)
        err = info.value
        assert str(err).startswith(f"{path}:{line}: "), str(err)
        assert message in str(err)
        assert err.line == line and err.path == path
        assert err.exit_code == 2


def test_inline_array_of_keys_is_read(tmp_path):
    path = write(tmp_path, f'key = [ {{ hash = "{hash_key(KEY_A)}", actor = "a", '
                           'class = "human" } ]\n')
    assert ApiKeys.load(path).authenticate(KEY_A) == Actor("a")


# ------------------------------------------------------------------------------------------
# client certificates


def test_certificate_subject_maps_to_actor(keys_file):
    certs = CertMap.load(keys_file)
    assert len(certs) == 2
    ci = Actor("ci-pipeline", "pipeline")
    # DER order (getpeercert) is the reverse of the RFC 4514 string; order does not matter
    assert certs.actor_for(peercert(("organizationName", "example"),
                                    ("commonName", "ci-pipeline"))) == ci
    assert certs.actor_for(peercert(("commonName", "ci-pipeline"),
                                    ("organizationName", "example"))) == ci
    # escapes, '+', long and lower-case names, spaces around separators
    bot = {"subject": ((("organizationName", "example"),),
                       (("commonName", "deploy, bot"), ("organizationalUnitName", "ops")))}
    assert certs.actor_for(bot) == Actor("deploy-bot", "service")


@pytest.mark.parametrize("cert", [
    peercert(("commonName", "ci-pipeline")),                                   # O missing
    peercert(("organizationName", "example"), ("commonName", "ci-pipeline"),
             ("organizationalUnitName", "extra")),                             # extra OU
    peercert(("organizationName", "Example"), ("commonName", "ci-pipeline")),  # value case
    peercert(("organizationName", "example"), ("commonName", "ci-pipeline2")),
])
def test_certificate_subject_must_match_exactly(keys_file, cert):
    with pytest.raises(AuthError, match="is not mapped to an actor"):
        CertMap.load(keys_file).actor_for(cert)


@pytest.mark.parametrize("cert", [None, {}, {"subject": ()}, {"subject": "garbage"}])
def test_no_verified_certificate_is_401(keys_file, cert):
    with pytest.raises(AuthError, match="no credentials"):
        CertMap.load(keys_file).actor_for(cert)


def test_unmapped_subject_is_named_in_rfc4514_order(keys_file):
    cert = peercert(("countryName", "US"), ("organizationName", "a,b"), ("commonName", "x"))
    with pytest.raises(AuthError) as info:
        CertMap.load(keys_file).actor_for(cert)
    assert "CN=x,O=a\\,b,C=US" in str(info.value)


@pytest.mark.parametrize("text, pairs", [
    ("CN=a,O=b", (("commonname", "a"), ("organizationname", "b"))),
    ("O=b, CN=a", (("commonname", "a"), ("organizationname", "b"))),
    ("cn=a\\2Cb", (("commonname", "a,b"),)),
    ("CN=caf\\C3\\A9", (("commonname", "café"),)),
    ("CN=\\ padded\\ ", (("commonname", " padded "),)),
    ("CN=a+UID=7", (("commonname", "a"), ("userid", "7"))),
    ("DC=example,DC=com", (("domaincomponent", "com"), ("domaincomponent", "example"))),
])
def test_parse_subject(text, pairs):
    assert parse_subject(text) == pairs


@pytest.mark.parametrize("text", ["", "CN", "CN=", "CN=#0403", "C N=a", "CN=a\\q", "=a"])
def test_parse_subject_refuses(text):
    with pytest.raises(ValueError):
        parse_subject(text)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_real_certificate_decoded_like_getpeercert(tmp_path, keys_file):
    """A certificate made by openssl, decoded by the ssl module into exactly the dict
    ``getpeercert()`` returns, maps to its actor."""
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/O=example/CN=ci-pipeline"],
                   check=True, capture_output=True)
    decoded = ssl._ssl._test_decode_cert(str(cert))
    assert CertMap.load(keys_file).actor_for(decoded) == Actor("ci-pipeline", "pipeline")


# ------------------------------------------------------------------------------------------
# conflux auth hash-key


def test_cli_hash_key(capsys):
    code, out, err = run_cli(capsys, "auth", "hash-key", KEY_A)
    assert (code, out, err) == (0, hash_key(KEY_A) + "\n", "")


def test_cli_hash_key_from_stdin(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY_A + "\n"))
    code, out, err = run_cli(capsys, "auth", "hash-key", "-")
    assert (code, out, err) == (0, hash_key(KEY_A) + "\n", "")


def test_cli_hash_key_refuses_an_empty_key(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    code, out, err = run_cli(capsys, "auth", "hash-key", "-")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("conflux auth: error: ")
    assert "no key given" in err


@pytest.mark.parametrize("key, stdin", [("your-secret-key", ""), ("-", "tiny\n")])
def test_cli_hash_key_warns_about_short_keys(capsys, monkeypatch, key, stdin):
    # the hash is printed (the original Conflux's README hashes "your-secret-key"), with one
    # warning line on stderr
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code, out, err = run_cli(capsys, "auth", "hash-key", key)
    typed = key if key != "-" else stdin.strip()
    assert (code, out) == (0, hash_key(typed) + "\n")
    assert len(err.splitlines()) == 1 and err.startswith("conflux auth: warning: ")
    assert "guessable" in err


def test_cli_auth_needs_a_subcommand(capsys):
    code, out, err = run_cli(capsys, "auth")
    assert code == 2 and out == "" and len(err.splitlines()) == 1

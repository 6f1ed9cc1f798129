"""A team member's writes against someone who can push but holds no key: every new value gets a
fresh data key, a key planted in a committed file opens nothing new; `whoami`; the messages a
newcomer reads."""

from __future__ import annotations

import secrets

import pytest
from conftest import User, make_user

from devsecrets.errors import IntegrityError
from devsecrets.keys import create_key_file, find_identities
from devsecrets.store import age, cipher, seal, sopsfile

CANARY = b"canary-team-5b1e-do-not-leak"


def planted(name: str, value: bytes, recipients: list[str]) -> tuple[bytes, bytes]:
    """What an attacker commits: a valid file for the members, under a data key they keep."""
    key = secrets.token_bytes(32)
    text = seal(name, value, recipients, key, [age.wrap(key, r) for r in recipients])
    return key, text


def opens_with(key: bytes, path) -> bool:
    doc = sopsfile.parse(path.read_bytes(), str(path))
    leaf = cipher.parse_leaf(doc.value, str(path))
    try:
        cipher.decrypt(key, leaf, f"{doc.name}:".encode(), str(path))
    except IntegrityError:
        return False
    return True


def identity(key_file):
    import pyrage

    (line,) = [w for w in key_file.read_text().split() if w.startswith("AGE-SECRET-KEY-1")]
    return pyrage.x25519.Identity.from_str(line)


def data_key(user: User, path) -> bytes | None:
    ids = find_identities(user.env_for_core()).keys
    return age.unwrap(sopsfile.parse(path.read_bytes(), str(path)).age, ids)


def test_a_planted_data_key_opens_no_value_a_member_writes_later(alice: User, bob: User):
    alice.run("recipients", "add", "bob", bob.public_key())
    members = [alice.public_key(), bob.public_key()]
    path = alice.store / "db_password.sops.yaml"
    key, text = planted("db_password", b"harmless fix", members)
    path.write_bytes(text)  # committed by the attacker, pulled by the members
    assert opens_with(key, path)

    assert alice.run("set", "db_password", input=CANARY).exit_code == 0
    assert not opens_with(key, path)
    assert data_key(alice, path) != key
    assert bob.run("get", "db_password").stdout == CANARY

    # and the other ordinary commands that write: each one against a freshly planted file
    for args, value in (
        (("set", "db_password"), CANARY + b"2"),
        (("rekey",), None),
        (("recipients", "rm", "bob"), None),
    ):
        key, text = planted("db_password", b"again", members)
        path.write_bytes(text)
        assert alice.run(*args, input=value).exit_code == 0
        assert data_key(alice, path) != key
        assert not opens_with(key, path)


def test_a_changed_value_always_gets_a_fresh_data_key(alice: User):
    alice.run("set", "x", input=b"one")
    path = alice.store / "x.sops.yaml"
    before = data_key(alice, path)
    alice.run("set", "x", input=b"two")
    assert data_key(alice, path) != before
    assert alice.run("get", "x").stdout == b"two"


def test_an_unknown_key_stanza_is_flagged_and_the_next_write_repairs_it(alice: User, tmp_path):
    alice.run("set", "x", input=b"v")
    path = alice.store / "x.sops.yaml"
    mallory = tmp_path / "mallory.txt"
    mallory_public = create_key_file(mallory, "now")
    doc = sopsfile.parse(path.read_bytes(), "x")
    key = data_key(alice, path)
    stanza = age.wrap(key, mallory_public)
    path.write_bytes(sopsfile.emit(doc.__class__(**{**_fields(doc), "age": (*doc.age, stanza)})))
    assert alice.run("get", "x").stdout == b"v"  # still valid: the MAC does not cover stanzas

    listing = alice.run("ls")
    assert "keys differ from recipients.yaml" in listing.out
    assert mallory_public[:16] in listing.out

    assert alice.run("set", "x", input=b"v").exit_code == 0  # same value: repaired anyway
    assert "keys differ" not in alice.run("ls").out
    assert [s.recipient for s in sopsfile.parse(path.read_bytes(), "x").age] == [alice.public_key()]
    assert data_key(alice, path) != key
    assert age.unwrap(sopsfile.parse(path.read_bytes(), "x").age, [identity(mallory)]) is None


def _fields(doc):
    return {f: getattr(doc, f) for f in doc.__slots__}


def test_whoami_shows_names_public_keys_and_sources(alice: User, bob: User, tmp_path):
    result = alice.run("whoami")
    assert result.exit_code == 0, result.stderr
    assert result.out.startswith(f"alice  {alice.public_key()}  {alice.key_file}")
    assert "AGE-SECRET-KEY" not in result.out
    result = bob.run("whoami")
    assert f"(not a recipient)  {bob.public_key()}" in result.out
    nobody = make_user(tmp_path, "nobody", tmp_path)
    result = nobody.run("whoami")
    assert result.exit_code == 1
    assert "no age identity found" in result.stderr


def test_a_non_recipient_is_shown_their_keys_and_the_files_recipients(alice: User, bob: User):
    alice.run("set", "x", input=CANARY)
    result = bob.run("get", "x")
    assert result.exit_code == 1
    assert f"yours: {bob.public_key()} (from {bob.key_file})" in result.stderr
    assert "its recipients: alice" in result.stderr
    assert "devsecrets init" in result.stderr
    assert CANARY.decode() not in result.stderr + result.out


def test_init_creates_the_key_where_sops_age_key_file_points(tmp_path, project):
    user = make_user(tmp_path, "carol", project)
    target = tmp_path / "keys" / "carol.txt"
    result = user.run("init", "--name", "carol", env={"SOPS_AGE_KEY_FILE": str(target)})
    assert result.exit_code == 0, result.stderr
    assert target.is_file()
    assert not user.key_file.exists()
    public = str(identity(target).to_public())
    assert f"carol: {public}" in (user.store / "recipients.yaml").read_text()


@pytest.mark.parametrize("value", [b"", b"x", CANARY])
def test_an_unchanged_value_leaves_the_file_byte_for_byte(alice: User, value: bytes):
    alice.run("set", "x", input=value)
    path = alice.store / "x.sops.yaml"
    before = path.read_bytes()
    assert "unchanged" in alice.run("set", "x", input=value).stderr
    assert path.read_bytes() == before

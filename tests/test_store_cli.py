"""The store through the CLI: init, set/get/ls/rm, recipients, rekey, and every bad input."""

from __future__ import annotations

import json
import stat

import pytest
from conftest import User, examples, make_user
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devsecrets.keys import find_identities
from devsecrets.store import MAX_VALUE_SIZE, Store, find_store

CANARY = b"canary-7f3a9c1e-do-not-leak"


def test_init_creates_key_store_and_gitignore(alice: User):
    assert stat.S_IMODE(alice.key_file.stat().st_mode) == 0o600
    assert alice.public_key() in (alice.store / "recipients.yaml").read_text()
    assert "alice:" in (alice.store / "recipients.yaml").read_text()
    assert ".lock" in (alice.store / ".gitignore").read_text()


def test_init_twice_is_harmless_and_never_overwrites_the_key(alice: User):
    key_before = alice.key_file.read_bytes()
    recipients_before = (alice.store / "recipients.yaml").read_bytes()
    result = alice.run("init")
    assert result.exit_code == 0
    assert "already a recipient" in result.stderr
    assert alice.key_file.read_bytes() == key_before
    assert (alice.store / "recipients.yaml").read_bytes() == recipients_before


def test_init_uses_an_existing_sops_key(tmp_path, project):
    user = make_user(tmp_path, "carol", project)
    from devsecrets.keys import create_key_file

    key_file = tmp_path / "elsewhere.txt"
    public = create_key_file(key_file, "now")
    result = user.run("init", "--name", "carol", env={"SOPS_AGE_KEY_FILE": str(key_file)})
    assert result.exit_code == 0, result.stderr
    assert not user.key_file.exists()
    assert f"carol: {public}" in (user.store / "recipients.yaml").read_text()


def test_set_get_roundtrip_exact_bytes(alice: User):
    value = b"line1\nline2\n\n"
    assert alice.run("set", "db_password", input=value).exit_code == 0
    result = alice.run("get", "db_password")
    assert result.exit_code == 0
    assert result.stdout == value


@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=st.binary(min_size=0, max_size=2048))
def test_any_bytes_roundtrip_through_the_core(alice: User, value: bytes):
    store = Store(alice.store)
    ids = find_identities(alice.env_for_core())
    store.write("blob", value, ids)
    assert store.read("blob", ids).value == value


def test_set_from_file_and_generate(alice: User, tmp_path):
    pem = tmp_path / "server.key"
    pem.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + bytes(range(256)) + b"\n")
    assert alice.run("set", "tls_key", "--from-file", str(pem)).exit_code == 0
    assert alice.run("get", "tls_key").stdout == pem.read_bytes()

    result = alice.run("set", "token", "--generate", "--length", "40", "--alphabet", "hex")
    assert result.exit_code == 0
    generated = alice.run("get", "token").stdout
    assert len(generated) == 40
    assert set(generated.decode()) <= set("0123456789abcdef")
    assert generated.decode() not in result.stderr + result.out


def test_setting_the_same_value_writes_nothing(alice: User):
    alice.run("set", "x", input=b"same")
    path = alice.store / "x.sops.yaml"
    before = path.read_bytes(), path.stat().st_mtime_ns
    result = alice.run("set", "x", input=b"same")
    assert result.exit_code == 0
    assert "unchanged" in result.stderr
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_a_changed_value_changes_its_lines_but_not_the_recipients(alice: User):
    alice.run("set", "x", input=b"one")
    before = (alice.store / "x.sops.yaml").read_text().splitlines()
    alice.run("set", "x", input=b"two")
    after = (alice.store / "x.sops.yaml").read_text().splitlines()
    # a fresh data key for the new value: value, stanza, lastmodified and mac change
    assert before[0] != after[0]
    assert [line for line in before if "recipient:" in line] == [
        line for line in after if "recipient:" in line
    ]


def test_ls_shows_metadata_without_decrypting(alice: User):
    alice.run("set", "db_password", input=b"12345")
    # no identity at all: ls still works because it reads only metadata
    result = alice.run("ls", "--json", env={"HOME": str(alice.home / "nowhere")})
    assert result.exit_code == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert entry["name"] == "db_password"
    assert entry["size"] == 5
    assert entry["recipients"] == ["alice"]
    assert entry["stale"] is False
    plain = alice.run("ls")
    assert plain.out.startswith("db_password")


def test_rm(alice: User):
    alice.run("set", "x", input=b"v")
    assert alice.run("rm", "x").exit_code == 0
    assert not (alice.store / "x.sops.yaml").exists()
    result = alice.run("rm", "x")
    assert result.exit_code == 1
    assert "no secret 'x'" in result.stderr


@pytest.mark.parametrize(
    "name", ["", "-lead", "trail-", "a" * 65, "sp ace", "../up", "x_unencrypted", "nl\n", "sops"]
)
def test_invalid_names_are_refused(alice: User, name: str):
    result = alice.run("set", "--", name, input=b"v")
    assert result.exit_code == 2
    assert result.stderr.startswith("devsecrets: error: invalid secret name")
    assert list(alice.store.glob("*.sops.yaml")) == []


def test_oversized_value_is_refused(alice: User):
    result = alice.run("set", "big", input=b"x" * (MAX_VALUE_SIZE + 1))
    assert result.exit_code == 2
    assert "Swarm's limit" in result.stderr
    assert not (alice.store / "big.sops.yaml").exists()
    assert alice.run("set", "big", input=b"x" * MAX_VALUE_SIZE).exit_code == 0


def test_no_identity_says_where_it_looked(alice: User):
    alice.run("set", "x", input=CANARY)
    result = alice.run("get", "x", env={"HOME": str(alice.home / "nowhere")})
    assert result.exit_code == 1
    assert result.stdout == b""
    assert "no age identity found; looked in" in result.stderr
    assert "SOPS_AGE_KEY_FILE" in result.stderr
    assert "keys.txt" in result.stderr
    assert "hint:" in result.stderr


def test_identity_that_is_not_a_recipient_names_the_recipients(alice: User, bob: User):
    alice.run("set", "x", input=CANARY)
    result = bob.run("get", "x")
    assert result.exit_code == 1
    assert "none of your identities can open" in result.stderr
    assert "its recipients: alice" in result.stderr
    assert CANARY.decode() not in result.stderr


def test_store_not_found(tmp_path):
    user = make_user(tmp_path, "dan", tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    result = user.run("ls")
    assert result.exit_code == 1
    assert result.stderr.startswith("devsecrets: error: no devsecrets store at")


def test_store_is_found_walking_up(alice: User):
    deep = alice.project / "a" / "b"
    deep.mkdir(parents=True)
    assert find_store(deep).root == alice.store


# -- recipients ---------------------------------------------------------------------------


def test_added_recipient_can_read(alice: User, bob: User):
    alice.run("set", "x", input=b"shared")
    result = alice.run("recipients", "add", "bob", bob.public_key())
    assert result.exit_code == 0, result.stderr
    assert bob.run("get", "x").stdout == b"shared"
    listing = alice.run("recipients", "ls").out
    assert "alice" in listing
    assert bob.public_key() in listing


def test_removed_recipient_cannot_read_anything_written_afterwards(alice: User, bob: User):
    """Even with the old data key from a copy kept before removal (sops updatekeys fails this)."""
    from devsecrets.store import age, cipher, sopsfile

    alice.run("set", "x", input=b"before")
    alice.run("recipients", "add", "bob", bob.public_key())
    kept_copy = (alice.store / "x.sops.yaml").read_bytes()

    assert alice.run("recipients", "rm", "bob").exit_code == 0
    alice.run("set", "x", input=CANARY)
    assert bob.run("get", "x").exit_code == 1

    bob_ids = find_identities(bob.env_for_core()).keys
    old_key = age.unwrap(sopsfile.parse(kept_copy, "old").age, bob_ids)
    assert old_key is not None  # bob really held the old data key
    new_doc = sopsfile.parse((alice.store / "x.sops.yaml").read_bytes(), "new")
    leaf = cipher.parse_leaf(new_doc.value, "new")
    with pytest.raises(Exception, match="integrity check failed"):
        cipher.decrypt(old_key, leaf, b"x:", "new")
    assert alice.run("get", "x").stdout == CANARY


def test_removing_the_last_recipient_is_refused(alice: User):
    result = alice.run("recipients", "rm", "alice")
    assert result.exit_code == 1
    assert "last recipient" in result.stderr


def test_bad_recipient_key_is_refused(alice: User):
    result = alice.run("recipients", "add", "eve", "age1notakey")
    assert result.exit_code == 1
    assert "not a valid" in result.stderr
    assert "eve" not in (alice.store / "recipients.yaml").read_text()


def test_ssh_ed25519_recipient(alice: User, tmp_path):
    import subprocess

    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    alice.run("set", "x", input=b"via-ssh")
    assert alice.run("recipients", "add", "erin", public).exit_code == 0
    erin = make_user(tmp_path, "erin", alice.project)
    result = erin.run("get", "x", env={"SOPS_AGE_SSH_PRIVATE_KEY_FILE": str(key)})
    assert result.stdout == b"via-ssh", result.stderr


def test_rekey_rotates_every_data_key(alice: User):
    from devsecrets.store import age, sopsfile

    for name in ("a", "b"):
        alice.run("set", name, input=name.encode())
    ids = find_identities(alice.env_for_core()).keys

    def data_key(name):
        return age.unwrap(
            sopsfile.parse((alice.store / f"{name}.sops.yaml").read_bytes(), name).age, ids
        )

    before = {n: data_key(n) for n in "ab"}
    assert alice.run("rekey").exit_code == 0
    assert all(data_key(n) != before[n] for n in "ab")
    assert alice.run("get", "a").stdout == b"a"

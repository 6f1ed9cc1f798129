"""The store format against the real `sops` binary, both ways (ARCHITECTURE.md, "The SOPS format")."""

from __future__ import annotations

import os

import pytest
from conftest import User, run_sops

pytestmark = pytest.mark.sops

BINARY = bytes(range(256)) + b"\n\n"


@pytest.mark.parametrize(
    "value",
    [b"hunter2", b"line1\nline2\n", BINARY, b"x" * 100_000, b""],
    ids=["short", "lines", "binary", "large", "empty"],
)
def test_sops_decrypts_what_devsecrets_writes(alice: User, value: bytes):
    alice.run("set", "db_password", input=value)
    path = alice.store / "db_password.sops.yaml"
    result = run_sops(alice, "decrypt", "--extract", '["db_password"]', str(path))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == value
    # the whole-file decrypt checks the MAC too
    assert run_sops(alice, "decrypt", str(path)).returncode == 0


def test_devsecrets_reads_what_sops_encrypts(alice: User, tmp_path):
    plain = tmp_path / "api_token.sops.yaml"
    plain.write_text('api_token: "from-sops-é"\n')
    result = run_sops(
        alice,
        "encrypt",
        "--age",
        alice.public_key(),
        "--output",
        str(alice.store / "api_token.sops.yaml"),
        str(plain),
    )
    assert result.returncode == 0, result.stderr.decode()
    got = alice.run("get", "api_token")
    assert got.exit_code == 0, got.stderr
    assert got.stdout == "from-sops-é".encode()


def test_sops_typed_values_read_as_sops_extract_prints_them(alice: User, tmp_path):
    plain = tmp_path / "port.sops.yaml"
    plain.write_text("port: 5432\n")
    out = alice.store / "port.sops.yaml"
    assert (
        run_sops(
            alice, "encrypt", "--age", alice.public_key(), "--output", str(out), str(plain)
        ).returncode
        == 0
    )
    expected = run_sops(alice, "decrypt", "--extract", '["port"]', str(out)).stdout
    assert expected == b"5432\n"
    assert alice.run("get", "port").stdout == expected


def test_sops_set_on_a_devsecrets_file_is_read_back(alice: User):
    alice.run("set", "db_password", input=b"old")
    path = alice.store / "db_password.sops.yaml"
    result = run_sops(alice, "set", str(path), '["db_password"]', '"changed-by-sops"')
    assert result.returncode == 0, result.stderr.decode()
    assert alice.run("get", "db_password").stdout == b"changed-by-sops"


def test_sops_edit_keeps_the_ciphertext_of_an_unchanged_value(alice: User, bob, tmp_path):
    """IV reuse both ways: rewriting an unchanged value is byte-identical in git."""
    alice.run("set", "db_password", input=BINARY)
    path = alice.store / "db_password.sops.yaml"
    before = path.read_text().splitlines()[0]
    editor = tmp_path / "touch-nothing.sh"
    editor.write_text(
        "#!/bin/sh\nprintf '\\n# note\\n' >> \"$1\"\n"
    )  # a change sops must re-encrypt
    editor.chmod(0o755)
    env_editor = {"EDITOR": str(editor)}
    result = run_sops(alice.with_env(env_editor), "edit", str(path))
    assert result.returncode == 0, result.stderr.decode()
    assert path.read_text().splitlines()[0] == before
    assert alice.run("get", "db_password").stdout == BINARY
    # and devsecrets, re-wrapping for a new recipient, keeps sops' ciphertext line as it is
    assert alice.run("recipients", "add", "bob", bob.public_key()).exit_code == 0
    assert path.read_text().splitlines()[0] == before


def test_sops_rejects_a_file_devsecrets_would_reject(alice: User):
    """Sanity: the tamper our reader catches is one sops catches too."""
    alice.run("set", "db_password", input=b"v")
    path = alice.store / "db_password.sops.yaml"
    path.write_text(path.read_text().replace('lastmodified: "2', 'lastmodified: "1', 1))
    assert run_sops(alice, "decrypt", str(path)).returncode != 0
    assert alice.run("get", "db_password").exit_code == 1


def test_default_key_location_is_shared_with_sops(alice: User):
    """init put the key where sops looks by default: sops needs no setup."""
    alice.run("set", "x", input=b"v")
    env = alice.subprocess_env()
    assert "SOPS_AGE_KEY_FILE" not in env
    assert os.path.exists(alice.key_file)
    result = run_sops(alice, "decrypt", "--extract", '["x"]', str(alice.store / "x.sops.yaml"))
    assert result.stdout == b"v"

"""Tampered, truncated, swapped and foreign files fail closed: one line, exit 1, no bytes out."""

from __future__ import annotations

import base64
import re

import pytest
from conftest import User, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CANARY = b"canary-integrity-5d1b"


@pytest.fixture
def stored(alice: User) -> User:
    assert alice.run("set", "db_password", input=CANARY).exit_code == 0
    assert alice.run("set", "api_key", input=b"other-value").exit_code == 0
    return alice


def assert_fails_closed(user: User, name: str, fragment: str = "integrity check failed for"):
    result = user.run("get", name)
    assert result.exit_code == 1, result.stderr
    assert result.stdout == b""
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # error + optional hint
    assert CANARY.decode() not in result.stderr
    assert "Traceback" not in result.stderr


def _flip_base64(text: str, field: str) -> str:
    def flip(match: re.Match) -> str:
        raw = bytearray(base64.b64decode(match.group(2)))
        raw[0] ^= 0x01
        return match.group(1) + base64.b64encode(bytes(raw)).decode()

    return re.sub(rf"({field}:)([A-Za-z0-9+/=]+)", flip, text, count=1)


@pytest.mark.parametrize("field", ["data", "iv", "tag"])
def test_a_flipped_bit_in_the_value_fails(stored: User, field: str):
    path = stored.store / "db_password.sops.yaml"
    path.write_text(_flip_base64(path.read_text(), field))
    assert_fails_closed(stored, "db_password")


def test_a_flipped_bit_in_the_mac_fails(stored: User):
    path = stored.store / "db_password.sops.yaml"
    lines = path.read_text().splitlines()
    lines = [(_flip_base64(ln, "data") if ln.startswith("    mac:") else ln) for ln in lines]
    path.write_text("\n".join(lines) + "\n")
    assert_fails_closed(stored, "db_password")


def test_a_changed_lastmodified_fails_the_mac(stored: User):
    path = stored.store / "db_password.sops.yaml"
    text = re.sub(r'lastmodified: "\d{4}', 'lastmodified: "1999', path.read_text())
    path.write_text(text)
    assert_fails_closed(stored, "db_password")


def test_swapped_files_fail_and_are_never_served_under_the_wrong_name(stored: User):
    a, b = stored.store / "db_password.sops.yaml", stored.store / "api_key.sops.yaml"
    text_a, text_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(text_b)
    b.write_bytes(text_a)
    assert_fails_closed(stored, "db_password", "renamed or swapped")
    assert_fails_closed(stored, "api_key", "renamed or swapped")


def test_value_moved_under_another_key_fails(stored: User):
    """Renaming the key inside the file too: the AAD binds the ciphertext to its name."""
    a = stored.store / "db_password.sops.yaml"
    moved = a.read_text().replace("db_password:", "api_key:", 1)
    (stored.store / "api_key.sops.yaml").write_text(moved)
    assert_fails_closed(stored, "api_key")


def test_an_extra_key_is_refused(stored: User):
    path = stored.store / "db_password.sops.yaml"
    path.write_text('extra: ""\n' + path.read_text())
    assert_fails_closed(stored, "db_password", "expected exactly one secret")


def test_plaintext_value_is_refused(stored: User):
    path = stored.store / "db_password.sops.yaml"
    path.write_text(
        re.sub(r"^db_password: .*$", "db_password: plain", path.read_text(), flags=re.M)
    )
    assert_fails_closed(stored, "db_password", "not encrypted")


def test_non_sops_files_are_refused(stored: User):
    path = stored.store / "db_password.sops.yaml"
    for text in ["", "just text\n", "db_password: x\n", "[1, 2]\n", "a: [\n", "\x00\xff"]:
        path.write_bytes(text.encode("latin-1"))
        assert_fails_closed(stored, "db_password")


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(cut=st.integers(min_value=0, max_value=2000))
def test_truncated_files_never_yield_bytes(stored: User, cut: int):
    path = stored.store / "db_password.sops.yaml"
    original = (stored.store / "api_key.sops.yaml").read_bytes()
    full = path.read_bytes() if path.stat().st_size else original
    # cutting only the final newline leaves a complete file, so cut into the last token at least
    path.write_bytes(full[: min(cut, len(full.rstrip()) - 1)])
    try:
        result = stored.run("get", "db_password")
        assert result.exit_code == 1
        assert result.stdout == b""
        assert "devsecrets: error:" in result.stderr
    finally:
        path.write_bytes(full)


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(position=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_gives_the_value_or_an_error(stored: User, position: int, byte: int):
    """Adversarial edits: the reader returns the exact value or fails; never other bytes."""
    path = stored.store / "db_password.sops.yaml"
    full = path.read_bytes()
    mutated = bytearray(full)
    mutated[position % len(full)] = byte
    path.write_bytes(bytes(mutated))
    try:
        result = stored.run("get", "db_password")
        assert (result.exit_code, result.stdout) in ((0, CANARY),) or (
            result.exit_code == 1 and result.stdout == b""
        )
        assert "Traceback" not in result.stderr
    finally:
        path.write_bytes(full)


@pytest.mark.slow
def test_every_position_flipped_gives_the_value_or_an_error(stored: User):
    """A deterministic sweep beside the random one: each byte of the file, two ways."""
    path = stored.store / "db_password.sops.yaml"
    full = path.read_bytes()
    wrong = []
    try:
        for position in range(len(full)):
            for replacement in (full[position] ^ 0x01, ord("0")):
                mutated = bytearray(full)
                mutated[position] = replacement
                path.write_bytes(bytes(mutated))
                result = stored.run("get", "db_password")
                if not (
                    (result.exit_code, result.stdout) == (0, CANARY)
                    or (result.exit_code == 1 and not result.stdout)
                ):
                    wrong.append(position)
    finally:
        path.write_bytes(full)
    assert wrong == []

"""An interrupted `recipients rm` is reported by every command and finishes when re-run."""

from __future__ import annotations

import pytest
from conftest import User

import devsecrets.store as store_module
from devsecrets.keys import find_identities
from devsecrets.store import Store

VALUES = {f"s{i}": f"canary-interrupted-{i}".encode() for i in range(5)}


@pytest.fixture
def team(alice: User, bob: User) -> User:
    for name, value in VALUES.items():
        assert alice.run("set", name, input=value).exit_code == 0
    assert alice.run("recipients", "add", "bob", bob.public_key()).exit_code == 0
    return alice


def holding(user: User, key: str) -> list[str]:
    store = Store(user.store)
    return [n for n in store.names() if key in {s.recipient for s in store._load(n).age}]


def interrupt_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """Make the n+1-th store write die as a SIGKILL would: nothing after it runs."""
    real = store_module._atomic_write
    count = {"n": 0}

    def dying(path, data, **options):  # type: ignore[no-untyped-def]
        if path.name.endswith(".sops.yaml"):
            count["n"] += 1
            if count["n"] > writes:
                raise KeyboardInterrupt
        real(path, data, **options)

    monkeypatch.setattr(store_module, "_atomic_write", dying)


def test_an_interrupted_recipients_rm_is_reported_and_finishes(
    team: User, bob: User, monkeypatch: pytest.MonkeyPatch
):
    key = bob.public_key()
    with monkeypatch.context() as patch:
        interrupt_after(patch, writes=2)
        assert team.run("recipients", "rm", "bob").exit_code == 130
    assert "bob" not in team.run("recipients", "ls").out
    assert 0 < len(holding(team, key)) < len(VALUES)  # half done
    for command in (["ls"], ["get", "s0"], ["recipients", "ls"]):
        result = team.run(*command)
        assert "devsecrets: warning: an interrupted `recipients rm` of bob did not finish" in (
            result.stderr
        ), command
        assert "devsecrets recipients rm bob` again" in result.stderr
    finished = team.run("recipients", "rm", "bob")
    assert finished.exit_code == 0, finished.stderr
    assert holding(team, key) == []
    assert not (team.store / ".journal").exists()
    assert "interrupted" not in team.run("ls").stderr
    identities = find_identities(team.env_for_core())
    for name, value in VALUES.items():
        assert Store(team.store).read(name, identities).value == value
    again = team.run("recipients", "rm", "bob")
    assert again.exit_code == 1
    assert "no recipient 'bob'" in again.stderr


def test_interrupted_before_recipients_yaml_changed_just_runs_again(
    team: User, bob: User, monkeypatch: pytest.MonkeyPatch
):
    with monkeypatch.context() as patch:
        patch.setattr(store_module.Store, "_save_recipients", _die)
        assert team.run("recipients", "rm", "bob").exit_code == 130
    assert "bob" in team.run("recipients", "ls").out
    assert team.run("recipients", "rm", "bob").exit_code == 0
    assert holding(team, bob.public_key()) == []
    assert not (team.store / ".journal").exists()


def test_rekey_also_finishes_an_interrupted_removal(
    team: User, bob: User, monkeypatch: pytest.MonkeyPatch
):
    with monkeypatch.context() as patch:
        interrupt_after(patch, writes=1)
        team.run("recipients", "rm", "bob")
    assert team.run("rekey").exit_code == 0
    assert holding(team, bob.public_key()) == []
    assert "interrupted" not in team.run("ls").stderr


def test_a_damaged_journal_is_one_line(team: User):
    (team.store / ".journal").write_text("{not json")
    result = team.run("ls")
    assert result.exit_code == 1
    assert ".journal is damaged" in result.stderr
    assert "Traceback" not in result.stderr


def _die(*args: object) -> None:
    raise KeyboardInterrupt

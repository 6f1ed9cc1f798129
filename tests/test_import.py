"""`devsecrets import`: plaintext files of the stack, .env keys and sops files into the
store, reported by name; plaintext deleted only when confirmed; .gitignore updated."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import pytest
from conftest import User, devsecrets, devsecrets_cmd, run_sops, write_stack

CANARY = b"canary-import-61f0"
pytestmark = pytest.mark.docker  # the stack is read by `docker compose config`


@pytest.fixture
def plain(alice: User, compose_cli) -> User:
    """A project the old way: ./secrets/*.txt named by file: secrets, tracked in git."""
    secrets_dir = alice.project / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "db_password.txt").write_bytes(CANARY)
    (secrets_dir / "api_key.txt").write_bytes(b"k3y\n")
    write_stack(
        alice.project,
        "busybox",
        {"api": {"secrets": ["db_password", "api_key"]}},
        {
            "secrets": {
                "db_password": {"file": "./secrets/db_password.txt"},
                "api_key": {"file": "./secrets/api_key.txt"},
            }
        },
    )
    subprocess.run(["git", "-C", str(alice.project), "init", "-q"], check=True)
    return alice


def run_import(user: User, *args: str) -> tuple[int, str]:
    result = devsecrets(["import", *args], cwd=user.project, env=user.subprocess_env())
    out = (result.stdout + result.stderr).decode()
    assert CANARY.decode() not in out
    return result.returncode, out


def test_stack_files_are_imported_ignored_and_deleted(plain: User):
    code, out = run_import(plain, "--delete")
    assert code == 0, out
    assert "api_key: imported from ./secrets/api_key.txt" in out
    assert "db_password: imported from ./secrets/db_password.txt" in out
    assert plain.run("get", "db_password").stdout == CANARY
    assert plain.run("get", "api_key").stdout == b"k3y\n"  # exact bytes
    assert not (plain.project / "secrets" / "db_password.txt").exists()
    assert not (plain.project / "secrets" / "api_key.txt").exists()
    ignored = (plain.project / ".gitignore").read_text()
    assert "/secrets/db_password.txt\n" in ignored and "/secrets/api_key.txt\n" in ignored


def test_a_tracked_plaintext_file_is_named_with_git_rm_cached(plain: User):
    (plain.project / "secrets" / "api_key.txt").unlink()
    write_stack(
        plain.project,
        "busybox",
        {"api": {"secrets": ["db_password"]}},
        {"secrets": {"db_password": {"file": "./secrets/db_password.txt"}}},
    )
    subprocess.run(["git", "-C", str(plain.project), "add", "secrets"], check=True)
    code, out = run_import(plain)
    assert code == 0, out
    assert "delete it yourself" in out  # one file
    tracked = plain.project / "secrets" / "db_password.txt"
    assert f"{tracked} is tracked by git: `git rm --cached {tracked}` and commit" in out
    code, out = run_import(plain, "--yes")
    assert f"deleted {tracked}" in out
    assert "`git rm --cached" in out  # deleted here, still in git's index
    checked = devsecrets(["check", "--json"], cwd=plain.project, env=plain.subprocess_env())
    [finding] = [
        f for f in json.loads(checked.stdout)["findings"] if f["code"] == "plaintext-tracked"
    ]
    assert finding["hint"].startswith(f"`git rm --cached {tracked}` and commit")
    assert "devsecrets import" not in finding["hint"]


def test_without_delete_and_no_terminal_the_files_stay(plain: User):
    code, out = run_import(plain)
    assert code == 0, out
    assert "kept " in out and "--delete" in out
    assert (plain.project / "secrets" / "db_password.txt").read_bytes() == CANARY
    assert "/secrets/db_password.txt" in (plain.project / ".gitignore").read_text()
    again_code, again = run_import(plain)  # running twice changes nothing
    assert again_code == 0
    assert "db_password: unchanged" in again
    assert (plain.project / ".gitignore").read_text().count("/secrets/db_password.txt") == 1


def test_a_symlinked_plaintext_file_is_refused(plain: User, tmp_path: Path):
    target = plain.project / "secrets" / "db_password.txt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"not-this")
    target.unlink()
    target.symlink_to(elsewhere)
    code, out = run_import(plain, "--delete")
    assert code == 1
    assert "db_password.txt is a symlink; refusing to read through it" in out
    assert "devsecrets: hint: point the stack's `file:` at the real file" in out
    assert "levels of symbolic links" not in out
    assert elsewhere.exists()
    assert "db_password" not in plain.run("ls").out


def test_env_keys(alice: User, compose_cli):
    (alice.project / ".env").write_text(
        f"COMPOSE_PROJECT_NAME=x\nexport DB_PASSWORD='{CANARY.decode()}'\nSTRIPE=sk_1 # live\n"
    )
    code, out = run_import(alice, "--env-key", "DB_PASSWORD", "--env-key", "STRIPE=stripe_key")
    assert code == 0, out
    assert "db_password: imported from .env: DB_PASSWORD" in out
    assert "stripe_key: imported from .env: STRIPE" in out
    assert alice.run("get", "db_password").stdout == CANARY
    assert alice.run("get", "stripe_key").stdout == b"sk_1"
    assert "kept DB_PASSWORD, STRIPE in .env; remove them yourself" in out
    missing_code, missing = run_import(alice, "--env-key", "NOPE")
    assert missing_code == 2
    assert "has no NOPE" in missing


@pytest.mark.sops
def test_a_sops_file_one_key_per_secret(alice: User, tmp_path: Path):
    plain_file = tmp_path / "secrets.yaml"
    plain_file.write_text(f"db_password: {CANARY.decode()}\nport: 5432\n")
    encrypted = tmp_path / "secrets.enc.yaml"
    made = run_sops(
        alice, "encrypt", "--age", alice.public_key(), "--output", str(encrypted), str(plain_file)
    )
    assert made.returncode == 0, made.stderr
    plain_file.unlink()
    assert CANARY not in encrypted.read_bytes()
    code, out = run_import(alice, "--sops", str(encrypted))
    assert code == 0, out
    assert "db_password: imported from secrets.enc.yaml: db_password" in out
    assert alice.run("get", "db_password").stdout == CANARY
    assert alice.run("get", "port").stdout == b"5432"
    assert encrypted.exists()  # encrypted already: nothing to delete


def test_nothing_to_import_is_one_line(alice: User, compose_cli):
    code, out = run_import(alice)
    assert code == 1
    assert "no compose or stack file" in out


DOTENV = (
    b"# team settings\r\n"
    b"COMPOSE_PROJECT_NAME=x\r\n"
    b"export DB_PASSWORD='" + CANARY + b"' # moved\n"
    b"\n"
    b"  STRIPE=sk_1 # live\n"
    b"DB_PASSWORD=" + CANARY + b"\n"  # a second assignment: both lines go
    b"TAIL=\xff\xfe no newline"
)
LEFT = (
    b"# team settings\r\nCOMPOSE_PROJECT_NAME=x\r\n\n  STRIPE=sk_1 # live\nTAIL=\xff\xfe no newline"
)


def test_env_keys_removed_with_yes_every_other_byte_kept(alice: User, compose_cli):
    dotenv = alice.project / ".env"
    dotenv.write_bytes(DOTENV)
    dotenv.chmod(0o640)
    code, out = run_import(alice, "--env-key", "DB_PASSWORD", "--yes")
    assert code == 0, out
    assert "removed DB_PASSWORD from .env" in out
    assert dotenv.read_bytes() == LEFT
    assert dotenv.stat().st_mode & 0o777 == 0o640
    assert alice.run("get", "db_password").stdout == CANARY
    assert [p.name for p in alice.project.iterdir() if ".tmp-" in p.name] == []


def test_env_keys_stay_without_yes_and_without_a_terminal(alice: User, compose_cli):
    dotenv = alice.project / ".env"
    dotenv.write_bytes(DOTENV)
    code, out = run_import(alice, "--env-key", "DB_PASSWORD")
    assert code == 0, out
    assert "kept DB_PASSWORD in .env" in out and "--yes" in out
    assert dotenv.read_bytes() == DOTENV


@pytest.mark.parametrize(("answer", "removed"), [(b"y\n", True), (b"n\n", False)])
def test_env_keys_removed_when_confirmed_on_a_terminal(alice: User, compose_cli, answer, removed):
    dotenv = alice.project / ".env"
    dotenv.write_bytes(DOTENV)
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer)
        result = subprocess.run(
            [*devsecrets_cmd(), "import", "--env-key", "DB_PASSWORD"],
            stdin=follower,
            capture_output=True,
            cwd=alice.project,
            env=alice.subprocess_env(),
            timeout=120,
        )
    finally:
        os.close(follower)
        os.close(leader)
    out = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, out
    assert CANARY.decode() not in out
    assert "remove DB_PASSWORD from" in out
    assert dotenv.read_bytes() == (LEFT if removed else DOTENV)


def test_a_key_the_stack_still_reads_stays_in_env(alice: User, compose_cli):
    dotenv = alice.project / ".env"
    dotenv.write_bytes(b"DB_PASSWORD=" + CANARY + b"\nSTRIPE=sk_1\n")
    write_stack(alice.project, "busybox", {"api": {"environment": {"PW": "${DB_PASSWORD:-x}"}}}, {})
    code, out = run_import(
        alice, "--env-key", "DB_PASSWORD", "--env-key", "STRIPE=stripe_key", "--yes"
    )
    assert code == 0, out
    assert "kept DB_PASSWORD in .env: docker-stack.yml still reads ${DB_PASSWORD}" in out
    assert "removed STRIPE from .env" in out
    assert dotenv.read_bytes() == b"DB_PASSWORD=" + CANARY + b"\n"


def test_a_multi_line_value_or_a_symlinked_env_is_not_rewritten(alice: User, tmp_path: Path):
    from devsecrets.importer import ImportProblem, remove_dotenv_keys, still_read

    dotenv = alice.project / ".env"
    dotenv.write_bytes(b'KEY="line one\nline two"\nOTHER=1\n')
    with pytest.raises(ImportProblem, match="spans lines"):
        remove_dotenv_keys(dotenv, ["KEY"])
    assert dotenv.read_bytes() == b'KEY="line one\nline two"\nOTHER=1\n'
    real = tmp_path / "real.env"
    real.write_bytes(b"KEY=v\n")
    dotenv.unlink()
    dotenv.symlink_to(real)
    with pytest.raises(ImportProblem, match="is a symlink; refusing"):
        remove_dotenv_keys(dotenv, ["KEY"])
    assert real.read_bytes() == b"KEY=v\n" and dotenv.is_symlink()
    assert remove_dotenv_keys(real, ["NOPE"]) == []
    stack = tmp_path / "compose.yaml"
    stack.write_text("x: $KEY_LONGER $$KEY ${OTHER}\n")
    assert still_read(["KEY", "OTHER"], [stack]) == {"OTHER": "compose.yaml"}

"""`devsecrets check`: each finding appears when its problem is there and not otherwise;
values are never shown; the pre-commit hook stops a real `git commit`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DOCKER_CONFIG, User, devsecrets, write_stack

CANARY = b"canary-check-7e21a9"
# the stack is read by `docker compose config`; every test builds a git repo (seconds each)
pytestmark = [pytest.mark.docker, pytest.mark.slow]


def git(project: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(project), *args],
        check=True,
        capture_output=True,
        env={
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(project),
            "DOCKER_CONFIG": DOCKER_CONFIG,
            "PATH": "/usr/bin:/bin",
        },
    )


@pytest.fixture
def repo(alice: User, compose_cli) -> User:
    """alice's project as a git repository with a clean stack: db_password, stored."""
    git(alice.project, "init", "-q")
    git(alice.project, "config", "user.email", "a@example.invalid")
    git(alice.project, "config", "user.name", "alice")
    alice.run("set", "db_password", input=CANARY)
    stack(alice, {"api": {"secrets": ["db_password"]}})
    return alice


def stack(user: User, services: dict, extra: dict | None = None) -> None:
    write_stack(user.project, "busybox", services, extra)


def stack_with_a_plaintext_file(user: User) -> None:
    """`api` reads `api_key` from ./secrets/api_key.txt (a plaintext file) and `db_password`."""
    secrets_dir = user.project / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "api_key.txt").write_text("k3y-in-a-file")
    stack(
        user,
        {"api": {"secrets": ["db_password", "api_key"]}},
        {"secrets": {"api_key": {"file": "./secrets/api_key.txt"}}},
    )


def run_check(user: User, *args: str, env: dict | None = None) -> tuple[int, dict, str]:
    full_env = {**user.subprocess_env(), **(env or {})}
    result = devsecrets(["check", "--json", "--no-engine", *args], cwd=user.project, env=full_env)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert CANARY.decode() not in out + err  # never shown, whatever was found
    return result.returncode, (json.loads(out) if out.strip() else {}), err


def codes(report: dict) -> list[str]:
    return sorted(f["code"] for f in report["findings"])


def test_a_clean_project_passes(repo: User):
    code, report, _ = run_check(repo)
    assert (code, codes(report)) == (0, [])
    assert report["ok"] is True


def test_missing_and_unused(repo: User):
    repo.run("set", "old_token", input=b"t0ken-old")
    stack(repo, {"api": {"secrets": ["db_password", "db_pasword2"]}})
    code, report, _ = run_check(repo)
    assert code == 1
    assert codes(report) == ["missing", "unused"]
    by_code = {f["code"]: f for f in report["findings"]}
    assert [by_code["missing"]["secret"], by_code["unused"]["secret"]] == [
        "db_pasword2",
        "old_token",
    ]
    assert "did you mean 'db_password'" in by_code["missing"]["hint"]


def test_plaintext_secret_file_tracked_by_git(repo: User):
    stack_with_a_plaintext_file(repo)
    _, untracked, _ = run_check(repo)
    assert "plaintext-tracked" not in codes(untracked)
    git(repo.project, "add", "secrets/api_key.txt")
    code, report, _ = run_check(repo)
    assert code == 1
    [finding] = [f for f in report["findings"] if f["code"] == "plaintext-tracked"]
    assert [finding["secret"]] == ["api_key"]


def test_a_value_in_the_stacks_environment(repo: User):
    stack(repo, {"api": {"secrets": ["db_password"], "environment": {"DB_PASS": "${DB_PASS}"}}})
    _, clean, _ = run_check(repo, env={"DB_PASS": "something-else"})
    assert codes(clean) == []
    code, report, _ = run_check(repo, env={"DB_PASS": CANARY.decode()})
    assert code == 1
    [finding] = report["findings"]
    assert finding["code"] == "value-in-environment"
    assert finding["where"] == "services.api.environment.DB_PASS"


def test_a_value_in_dotenv_even_untracked(repo: User):
    (repo.project / ".env").write_text("# local\nOTHER=1\nDB_PASSWORD='" + CANARY.decode() + "'\n")
    code, report, _ = run_check(repo)
    assert code == 1
    [finding] = report["findings"]
    assert (finding["code"], finding["where"]) == ("value-in-file", ".env:3")


def test_a_value_in_a_tracked_file(repo: User):
    config = repo.project / "config"
    config.mkdir()
    ini = config / "app.ini"
    ini.write_text(f"[db]\nurl = postgres://app:{CANARY.decode()}@db/app\n")
    _, untracked, _ = run_check(repo)
    assert codes(untracked) == []  # not tracked, not .env: not searched
    git(repo.project, "add", "config/app.ini")
    code, report, _ = run_check(repo)
    assert code == 1
    [finding] = report["findings"]
    assert (finding["code"], finding["where"]) == ("value-in-file", "config/app.ini:2")


def test_a_pem_key_pasted_into_a_tracked_file_is_found(repo: User):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    repo.run("set", "tls_key", input=key)
    stack(repo, {"api": {"secrets": ["db_password", "tls_key"]}})
    (repo.project / "notes.md").write_bytes(b"# notes\n" + key)
    git(repo.project, "add", "notes.md")
    code, report, _ = run_check(repo)
    assert code == 1
    assert {f["secret"] for f in report["findings"]} == {"tls_key"}


def test_undecryptable_and_stale_recipients(repo: User, bob: User, tmp_path: Path):
    # a file only bob can read, dropped into alice's store (as a bad merge might)
    bob_project = tmp_path / "bob-project"
    bob_project.mkdir()
    bob_user = User(bob.home, bob_project, bob.env)
    assert bob_user.run("init", "--name", "bob").exit_code == 0
    bob_user.run("set", "x", input=b"bobs-value")
    (repo.store / "x.sops.yaml").write_bytes((bob_user.store / "x.sops.yaml").read_bytes())
    stack(repo, {"api": {"secrets": ["db_password", "x"]}})
    code, report, _ = run_check(repo)
    assert code == 1
    assert codes(report) == ["stale-recipients", "undecryptable"]
    assert {f["secret"] for f in report["findings"]} == {"x"}


def test_stale_recipients_alone(repo: User, bob: User):
    recipients = repo.store / "recipients.yaml"
    members = yaml.safe_load(recipients.read_text())
    members["bob"] = bob.public_key()  # added by hand, without re-wrapping the files
    recipients.write_text(yaml.safe_dump(members))
    code, report, _ = run_check(repo)
    assert code == 1
    assert codes(report) == ["stale-recipients"]


def test_a_merge_conflict_left_by_the_git_driver(repo: User):
    conflicts = repo.store / ".conflicts"
    conflicts.mkdir()
    (conflicts / "db_password.sops.yaml").write_bytes(
        (repo.store / "db_password.sops.yaml").read_bytes()
    )
    code, report, _ = run_check(repo)
    assert code == 1
    assert codes(report) == ["merge-conflict"]
    assert "devsecrets resolve db_password --ours|--theirs|--edit" in report["findings"][0]["hint"]


def test_no_identity_and_no_store(repo: User, tmp_path: Path):
    code, report, _ = run_check(
        repo, env={"HOME": str(tmp_path / "nobody"), "DOCKER_CONFIG": DOCKER_CONFIG}
    )
    assert code == 1
    assert "no-identity" in codes(report)
    full_env = repo.subprocess_env()
    result = devsecrets(
        ["--store", str(tmp_path / "none"), "check", "--json", "--no-engine"],
        cwd=repo.project,
        env=full_env,
    )
    assert result.returncode == 1
    assert "no-store" in [f["code"] for f in json.loads(result.stdout)["findings"]]


def test_engine_compose_and_tmpfs(repo: User, docker_engine: str, runtime_dir: Path, tmp_path):
    env = {**repo.subprocess_env(), "DEVSECRETS_RUNTIME_DIR": str(runtime_dir)}
    good = devsecrets(["check", "--json"], cwd=repo.project, env=env)
    report = json.loads(good.stdout)
    assert good.returncode == 0, report
    assert report["facts"]["up-mode"].startswith("host")
    assert "compose" in report["facts"] and "engine" in report["facts"]
    bad_env = {
        **env,
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "DEVSECRETS_RUNTIME_DIR": str(tmp_path / "on-disk"),
    }
    bad = devsecrets(["check", "--json"], cwd=repo.project, env=bad_env)
    assert bad.returncode == 1
    found = [f["code"] for f in json.loads(bad.stdout)["findings"]]
    assert "no-engine" in found and "no-tmpfs" in found
    assert "up-mode" not in json.loads(bad.stdout)["facts"]


def test_human_output_lists_problems_with_hints(repo: User):
    repo.run("set", "old_token", input=b"t0ken-old")
    result = devsecrets(["check", "--no-engine"], cwd=repo.project, env=repo.subprocess_env())
    out = result.stdout.decode()
    assert result.returncode == 1
    assert "FAIL  unused: secret old_token is in the store but the stack does not use it" in out
    assert "hint: remove it with `devsecrets rm old_token`" in out
    assert out.rstrip().endswith("1 problem(s)")


def test_what_up_warns_about_is_a_warning_that_does_not_fail(repo: User):
    """The same findings `up` prints (from `needs` and the layout), at warning level."""
    stack_with_a_plaintext_file(repo)
    code, report, _ = run_check(repo)
    assert (code, report["ok"]) == (0, True)
    [finding] = report["findings"]
    assert (finding["code"], finding["level"], finding["secret"]) == (
        "plaintext-file",
        "warning",
        "api_key",
    )
    assert "`devsecrets set api_key --from-file " in finding["message"]
    assert finding["message"].endswith("/secrets/api_key.txt`")  # compose's absolute path
    result = devsecrets(["check", "--no-engine"], cwd=repo.project, env=repo.subprocess_env())
    out = result.stdout.decode()
    assert result.returncode == 0
    assert "WARN  plaintext-file: secret api_key comes from plaintext file" in out
    assert out.rstrip().endswith("no problems found, 1 warning(s)")
    repo.run("set", "api_key", input=b"k3y-stored")  # the store wins: nothing to say
    code, report, _ = run_check(repo)
    assert (code, codes(report)) == (0, [])


def test_the_pre_commit_hook_stops_a_real_commit(repo: User, tmp_path: Path):
    """The hook's entry from .pre-commit-hooks.yaml, run by git as .git/hooks/pre-commit."""
    root = Path(__file__).resolve().parents[1]
    [hook] = yaml.safe_load((root / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "devsecrets-check" and hook["pass_filenames"] is False
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "devsecrets"  # as `pip install` would put it on PATH
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m devsecrets "$@"\n')
    wrapper.chmod(0o755)
    script = repo.project / ".git" / "hooks" / "pre-commit"
    script.write_text(f"#!/bin/sh\nexec {hook['entry']}\n")
    script.chmod(0o755)
    env = {
        **repo.subprocess_env(),
        "PATH": f"{bin_dir}:{repo.subprocess_env()['PATH']}",
        "PYTHONPATH": str(root),
        "GIT_CONFIG_NOSYSTEM": "1",
    }

    def commit(message: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", "-C", str(repo.project), "commit", "-q", "-m", message],
            env=env,
            capture_output=True,
            check=False,
        )

    git(repo.project, "add", "-A")
    good = commit("stack and store")
    assert good.returncode == 0, good.stdout + good.stderr
    (repo.project / "settings.py").write_text(f'DB_PASSWORD = "{CANARY.decode()}"\n')
    git(repo.project, "add", "settings.py")
    bad = commit("oops")
    assert bad.returncode != 0
    assert b"settings.py:1 holds the value of secret db_password" in bad.stdout + bad.stderr
    assert CANARY not in bad.stdout + bad.stderr
    log = subprocess.run(
        ["git", "-C", str(repo.project), "log", "--oneline"], capture_output=True, check=True
    )
    assert b"oops" not in log.stdout


def test_the_deploy_key_is_not_unused(repo: User):
    """`devsecrets deploy` keeps its hash key in the store; no stack names it."""
    repo.run("set", "devsecrets-deploy-key", input=b"k" * 32)
    code, report, _ = run_check(repo)
    assert (code, codes(report)) == (0, [])


def test_no_compose_and_a_broken_stack(repo: User, tmp_path: Path):
    code, report, _ = run_check(repo, env={"DEVSECRETS_COMPOSE": str(tmp_path / "no-compose")})
    assert code == 1
    assert codes(report) == ["no-compose"]
    assert "compose" not in report["facts"]
    (repo.project / "docker-stack.yml").write_text("services: [not, a, map\n")
    code, report, _ = run_check(repo)
    assert code == 1
    assert codes(report) == ["stack"]
    stack(repo, {"api": {"secrets": ["db_password"]}})
    code, report, _ = run_check(repo)
    assert (code, codes(report)) == (0, [])  # both gone once compose and the stack are back
    assert "compose" in report["facts"] and "stack" in report["facts"]


def test_a_build_secret_the_store_lacks_is_missing(repo: User):
    stack(
        repo,
        {"api": {"secrets": ["db_password"], "build": {"context": ".", "secrets": ["npm"]}}},
        {"secrets": {"npm": {"external": True}}},
    )
    code, report, _ = run_check(repo)
    assert code == 1
    [finding] = report["findings"]
    assert (finding["code"], finding["secret"]) == ("missing", "npm")
    assert "api (build)" in finding["message"]
    repo.run("set", "npm", input=b"npm-token-value")
    code, report, _ = run_check(repo)
    assert (code, codes(report)) == (0, [])  # stored: neither missing nor unused

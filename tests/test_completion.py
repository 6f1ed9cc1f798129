"""`devsecrets completion`: the script, run by the real bash, completes commands, options,
secret names (without decrypting) and service names (without compose)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import User

COMPLETE = """
source <(devsecrets completion bash)
c() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=()
      _devsecrets_completion devsecrets; printf '%s\\n' "${COMPREPLY[@]}"; }
"""


@pytest.fixture
def shell_env(alice: User, tmp_path: Path) -> dict[str, str]:
    """`devsecrets` on PATH runs this checkout, as an installed console script would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "devsecrets"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m devsecrets "$@"\n')
    wrapper.chmod(0o755)
    env = alice.subprocess_env()
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def bash_complete(alice: User, env: dict[str, str], *words: str) -> list[str]:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    quoted = " ".join(f"'{w}'" for w in words)
    out = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", COMPLETE + f"c devsecrets {quoted}"],
        cwd=alice.project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [line for line in out.stdout.splitlines() if line]


@pytest.fixture
def project_with_stack(alice: User) -> User:
    alice.run("set", "db_password", input=b"canary-completion-1")
    alice.run("set", "db_user", input=b"u")
    alice.run("set", "tls_key", input=b"k")
    (alice.project / "compose.yaml").write_text(
        "services:\n  api: {image: x}\n  worker: !reset\n    image: y\n"
    )
    (alice.project / "other.yml").write_text("services:\n  nginx: {image: x}\n")
    return alice


@pytest.mark.slow
def test_commands_and_options(project_with_stack: User, shell_env):
    commands = bash_complete(project_with_stack, shell_env, "")
    assert {"up", "down", "get", "set", "completion", "recipients"} <= set(commands)
    assert bash_complete(project_with_stack, shell_env, "set", "--f") == ["--from-file"]


@pytest.mark.slow
def test_secret_names_without_a_key(project_with_stack: User, shell_env):
    """The names come from file names: a user without any identity gets them too."""
    env = {**shell_env, "HOME": str(project_with_stack.home / "nowhere")}
    assert bash_complete(project_with_stack, env, "get", "db_") == ["db_password", "db_user"]
    assert bash_complete(project_with_stack, env, "edit", "t") == ["tls_key"]
    assert bash_complete(project_with_stack, env, "rm", "x") == []


@pytest.mark.slow
def test_service_names_from_the_stack_files(project_with_stack: User, shell_env):
    user = project_with_stack
    assert bash_complete(user, shell_env, "up", "") == ["api", "worker"]
    assert bash_complete(user, shell_env, "up", "-f", "other.yml", "") == ["nginx"]
    assert bash_complete(user, shell_env, "compose", "logs", "w") == ["worker"]
    assert bash_complete(user, shell_env, "up", "--on-change", "a") == ["api="]


def test_no_store_and_no_stack_offer_nothing(alice: User, tmp_path: Path):
    from devsecrets.completion import secret_names, service_names

    empty = tmp_path / "empty"
    empty.mkdir()
    assert secret_names(empty, None, {}) == []
    assert service_names(empty, {}, (), None) == []


@pytest.mark.slow
@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_and_protocol(project_with_stack: User, shell_env, shell):
    """Through click's protocol (the shells themselves may not be installed here)."""
    script = subprocess.run(
        ["devsecrets", "completion", shell], env=shell_env, capture_output=True, text=True
    )
    assert script.returncode == 0
    assert "_DEVSECRETS_COMPLETE" in script.stdout
    env = {
        **shell_env,
        "_DEVSECRETS_COMPLETE": f"{shell}_complete",
        "COMP_WORDS": "devsecrets get db_",
        "COMP_CWORD": "2" if shell == "zsh" else "db_",  # fish passes the incomplete word
    }
    out = subprocess.run(
        ["devsecrets"], cwd=project_with_stack.project, env=env, capture_output=True, text=True
    )
    assert "db_password" in out.stdout and "db_user" in out.stdout
    assert "tls_key" not in out.stdout
    if shutil.which(shell):
        checked = subprocess.run([shell, "-n"], input=script.stdout, text=True, env=os.environ)
        assert checked.returncode == 0


def test_core_names_in_process(project_with_stack: User):
    """The same answers without a shell, and none for a directory without store or stack."""
    from devsecrets.completion import secret_names, service_names

    user = project_with_stack
    env = user.env_for_core()
    assert secret_names(user.project, None, env) == ["db_password", "db_user", "tls_key"]
    assert secret_names(user.project, str(user.store), env) == ["db_password", "db_user", "tls_key"]
    assert service_names(user.project, env, (), None) == ["api", "worker"]
    assert service_names(user.project, env, ("other.yml",), None) == ["nginx"]
    (user.project / "other.yml").write_text("services: [not, a, map")
    assert service_names(user.project, env, ("other.yml",), None) == []

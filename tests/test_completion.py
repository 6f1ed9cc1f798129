"""`devsecrets completion`: the script, run by the real bash, completes commands, options,
secret names (without decrypting) and service names (without compose)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import User, need

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


# zsh: the script is sourced after compinit, as a user's ~/.zshrc does; zsh's builtin compadd
# and the _describe function are replaced by ones that print what they were given, and the
# completion function is called as the completion system would (words, CURRENT).
ZSH_COMPLETE = """
autoload -U compinit && compinit -u -D
source <(devsecrets completion zsh)
compadd() { print -rl -- "${(@P)${@[-1]}}" }
_describe() { print -rl -- "${(@)${(@P)3}%%:*}" }
c() { words=("$@"); CURRENT=$#; _devsecrets_completion }
"""

# fish: the script is sourced as a completions file; `complete -C` asks fish itself.
FISH_COMPLETE = """
devsecrets completion fish | source
complete -C "$argv[1]" | string replace -r '\t.*' ''
true  # string replace fails when no line had a description
"""


def shell_complete(shell: str, user: User, env: dict[str, str], *words: str) -> list[str]:
    """Completions for `devsecrets WORDS…` from the real zsh or fish (missing locally: skip;
    under CI=true: fail, as .ci/run installs both)."""
    if shutil.which(shell) is None:
        need(f"{shell} is not installed (Debian: apt-get install {shell})")
    if shell == "zsh":
        quoted = " ".join(f"'{w}'" for w in ("devsecrets", *words))
        argv = ["zsh", "-f", "-c", ZSH_COMPLETE + f"c {quoted}"]
    else:
        argv = ["fish", "--no-config", "-c", FISH_COMPLETE, " ".join(("devsecrets", *words))]
    out = subprocess.run(
        argv, cwd=user.project, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return sorted({line for line in out.stdout.splitlines() if line})


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


@pytest.mark.slow
@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_complete_through_the_real_shell(project_with_stack: User, shell_env, shell):
    user = project_with_stack
    commands = shell_complete(shell, user, shell_env, "")
    assert {"up", "down", "get", "set", "build", "completion", "recipients"} <= set(commands)
    assert shell_complete(shell, user, shell_env, "set", "--f") == ["--from-file"]
    nowhere = {**shell_env, "HOME": str(user.home / "nowhere")}  # names without a key
    assert shell_complete(shell, user, nowhere, "get", "db_") == ["db_password", "db_user"]
    assert shell_complete(shell, user, shell_env, "rm", "x") == []
    assert shell_complete(shell, user, shell_env, "up", "") == ["api", "worker"]
    assert shell_complete(shell, user, shell_env, "up", "-f", "other.yml", "") == ["nginx"]
    assert shell_complete(shell, user, shell_env, "compose", "logs", "w") == ["worker"]


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


def complete_services(cwd: Path, env: dict[str, str], timeout: float = 20) -> tuple[list[str], str]:
    """`devsecrets up <TAB>` through click's protocol, in a child limited to 1 GiB of address
    space: (the names offered, stderr)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    out = subprocess.run(
        [sys.executable, "-m", "devsecrets"],
        cwd=cwd,
        env={
            **env,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "_DEVSECRETS_COMPLETE": "bash_complete",
            "COMP_WORDS": "devsecrets up ",
            "COMP_CWORD": "2",
        },
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,  # noqa: PLW1509 - no threads in this test process' child setup
    )
    assert out.returncode == 0, out.stderr
    return [line.split(",", 1)[1] for line in out.stdout.splitlines() if line], out.stderr


def alias_bomb(levels: int = 9) -> str:
    """A billion laughs: 9 levels of 9 aliases each would be 9**9 leaves if expanded."""
    text = 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, levels + 1):
        text += f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]\n"
    merged = "m0: &m0 {a: 1, b: 2}\n"  # the same through merge keys
    for i in range(1, 25):
        merged += f"m{i}: &m{i} {{<<: *m{i - 1}, x: *m{i - 1}, y: *m{i - 1}}}\n"
    return text + merged


def test_a_stack_with_anchors_and_aliases_still_completes(alice: User):
    """Compose files share blocks through anchors: completion reads them (never expanded)."""
    from devsecrets.completion import service_names

    (alice.project / "compose.yaml").write_text(
        "x-common: &common {image: x, restart: always}\n"
        "x-more: &more {cron: {<<: *common}}\n"
        "services:\n"
        "  <<: *more\n"
        "  api: *common\n"
        "  worker: {<<: *common, command: work}\n"
    )
    assert service_names(alice.project, alice.env_for_core(), (), None) == ["api", "cron", "worker"]


@pytest.mark.parametrize(
    "stack",
    [
        pytest.param(alias_bomb() + "services:\n  api: *l9\n  web: {x: *m24}\n", id="alias-bomb"),
        pytest.param("services: " + "[" * 100_000 + "]" * 100_000 + "\n", id="deep-nesting"),
        pytest.param("services:\n  api: " + "[" * 900 + "]" * 900 + "\n", id="nesting-900"),
    ],
)
def test_a_hostile_stack_file_keeps_completion_quick_small_and_quiet(alice: User, stack: str):
    """TAB must not hang, eat memory, crash (a segfault at 100,000 levels with a plain
    loader) or print a traceback: it offers what it safely can, at worst nothing."""
    import time

    (alice.project / "compose.yaml").write_text(stack)
    started = time.monotonic()
    names, stderr = complete_services(alice.project, alice.subprocess_env())
    assert time.monotonic() - started < 10
    assert stderr == ""
    assert names in ([], ["api"], ["api", "web"])
    if "l9" in stack:
        assert names == ["api", "web"]  # aliases are fine, just never expanded


def test_a_stack_file_that_is_a_fifo_or_endless_offers_nothing(alice: User):
    """Named with COMPOSE_FILE (or -f), a stack file is read whatever it is: a FIFO would
    block TAB forever, /dev/zero would fill memory."""
    env = {**alice.subprocess_env(), "COMPOSE_FILE": "stack.yml"}
    stack = alice.project / "stack.yml"
    os.mkfifo(stack)
    assert complete_services(alice.project, env) == ([], "")
    stack.unlink()
    stack.symlink_to("/dev/zero")
    assert complete_services(alice.project, env) == ([], "")

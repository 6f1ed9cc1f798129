"""README, --help and templates stay true to the code."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

from click.testing import CliRunner

from devsecrets.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def all_commands() -> list[str]:
    names = []
    for name, command in cli.commands.items():
        if command.hidden:  # git-merge, git-textconv: started by git, not by people
            continue
        names.append(name)
        names += [f"{name} {sub}" for sub in getattr(command, "commands", {})]
    return names


COMPOSE_COMMANDS = ("up", "watch", "down", "render", "compose")


def readme_usage() -> dict[str, str]:
    """The README's usage block as {command: its text}: an entry starts two spaces in, its
    continuation lines are indented further. `recipients ls | add … | rm …` gives one entry
    per subcommand; COMPOSE FLAGS go to every command that takes them; "" is the group."""
    usage = re.search(r"## Usage\n\n```\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert usage, "no usage block in the README"
    lines = usage.group(1).splitlines()
    entries: dict[str, str] = {"": lines[0]}
    current = None
    for line in lines[1:]:
        if re.match(r"^  \S", line):
            current = line.split()[0]
            entries[current] = line
        elif line.strip() and current is not None:
            entries[current] += "\n" + line
    flags = entries.pop("COMPOSE")
    for name in COMPOSE_COMMANDS:
        entries[name] += "\n" + flags
    for name in list(entries):
        if name in cli.commands and hasattr(cli.commands[name], "commands"):
            text = entries.pop(name)
            for part in text.split("|"):
                words = part.split()
                sub = words[1] if words[0] == name else words[0]
                entries[f"{name} {sub}"] = part
    return entries


def help_text(name: str) -> str:
    result = CliRunner().invoke(cli, [*name.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, name
    assert "Usage:" in result.output
    return result.output


def test_the_readme_documents_exactly_the_commands_there_are():
    documented = set(readme_usage()) - {""}
    assert documented == set(all_commands()) - {"recipients"}


def test_every_option_in_the_readme_is_in_that_commands_help():
    for name, text in readme_usage().items():
        options = re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text)
        options += re.findall(r"(?<![\w-])(-[a-zA-Z])/--", text)  # -f/--file
        shown = help_text(name)
        for option in options:
            assert re.search(rf"(?<![\w-]){re.escape(option)}\b", shown), (
                f"README documents {option} for `{name or 'devsecrets'}`; its --help does not"
            )


def test_every_command_has_help():
    for name in all_commands():
        help_text(name)


def test_python_helper_reads_file_env_then_run_secrets(tmp_path: Path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "read_secret", ROOT / "templates" / "read_secret.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    secret = tmp_path / "pw"
    secret.write_bytes(b"v\n")
    monkeypatch.setenv("DB_PASSWORD_FILE", str(secret))
    assert module.read_secret("db_password") == b"v\n"
    assert module.read_secret("db_password", strip_newline=True) == b"v"


def test_shell_helper_exports_from_the_file(tmp_path: Path):
    secret = tmp_path / "pw"
    secret.write_text("s3")
    script = (
        f'. {ROOT / "templates" / "read_secret.sh"}; file_env DB_PASSWORD; printf %s "$DB_PASSWORD"'
    )
    out = subprocess.run(
        ["sh", "-c", script],
        env={"DB_PASSWORD_FILE": str(secret), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "s3"


def test_tests_that_change_home_keep_the_docker_config():
    """A compose plugin in ~/.docker/cli-plugins must stay visible when a test moves HOME:
    every process environment a test builds with HOME (an `env = {...}` or `env={...}`) also
    has DOCKER_CONFIG, or spreads one that has it. `User.run(env=...)` is merged over the
    user's own environment, which has it."""
    import ast

    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        tree = ast.parse(path.read_text())
        envs = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id.endswith("env") for t in node.targets)
        ]
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            user_run = (
                isinstance(call.func, ast.Attribute)
                and call.func.attr == "run"
                and not (
                    isinstance(call.func.value, ast.Name) and call.func.value.id == "subprocess"
                )
            )
            envs += [kw.value for kw in call.keywords if kw.arg == "env" and not user_run]
        for node in envs:
            if not isinstance(node, ast.Dict):
                continue
            keys = [k.value if isinstance(k, ast.Constant) else k for k in node.keys]
            if "HOME" in keys and "DOCKER_CONFIG" not in keys and None not in keys:
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"env with HOME but no DOCKER_CONFIG: {offenders}"


def test_user_env_points_at_the_invoking_users_docker_config(tmp_path: Path):
    import os

    from conftest import make_user

    user = make_user(tmp_path, "carol", tmp_path)
    expected = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    assert user.env["HOME"] != str(Path.home())
    assert user.env["DOCKER_CONFIG"] == expected


def test_troubleshooting_quotes_real_messages():
    """Each error quoted in the README's troubleshooting table is one devsecrets (or its
    tests) can print: a plain fragment of it is in the source."""
    text = (ROOT / "README.md").read_text()
    table = re.search(r"## Troubleshooting\n\n(.*?)\n\n", text, re.S).group(1)
    haystack = "".join(
        p.read_text()
        for p in [*(ROOT / "devsecrets").rglob("*.py"), ROOT / "tests" / "conftest.py"]
    )
    cells = [row.split("|")[1].strip() for row in table.splitlines()[2:]]
    quoted = [m for cell in cells if cell.startswith("`") for m in re.findall(r"`([^`]+)`", cell)]
    assert len(quoted) >= 8
    for message in quoted:
        fragments = [f.strip(" ;/") for f in re.split(r"…|'[^']*'|N secret", message)]
        fragments = [f for f in fragments if len(f) >= 10]
        if not fragments:
            continue  # a name, not a message
        assert any(f in haystack for f in fragments), message

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
        names.append(name)
        names += [f"{name} {sub}" for sub in getattr(command, "commands", {})]
    return names


def test_every_command_has_help_and_is_in_the_readme_usage():
    usage = re.search(r"## Usage\n\n```\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    for name in all_commands():
        result = CliRunner().invoke(cli, [*name.split(), "--help"])
        assert result.exit_code == 0, name
        assert "Usage:" in result.output
        first = name.split()[0]
        assert re.search(rf"^\s+{re.escape(first)}\b", usage, re.M), (
            f"{first} missing from README usage"
        )


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

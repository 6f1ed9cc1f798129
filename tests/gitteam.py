"""Real git for team tests: people with their own HOME and clone, a bare repo as the remote.

git never reads the developer's global or system config (GIT_CONFIG_GLOBAL, NOSYSTEM), and each
person commits under their own name."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import Result, User, make_user

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Person:
    user: User
    name: str

    @property
    def clone(self) -> Path:
        return self.user.project

    def env(self) -> dict[str, str]:
        env = self.user.subprocess_env()
        env.update(
            GIT_CONFIG_GLOBAL=str(self.user.home / ".gitconfig"),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_AUTHOR_NAME=self.name.title(),
            GIT_AUTHOR_EMAIL=f"{self.name}@example.test",
            GIT_COMMITTER_NAME=self.name.title(),
            GIT_COMMITTER_EMAIL=f"{self.name}@example.test",
            GIT_TERMINAL_PROMPT="0",
            # the merge and diff drivers run `python -m devsecrets` from this checkout
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        )
        return env

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["git", *args],
            cwd=self.clone,
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)}: {result.stdout}{result.stderr}")
        return result

    def run(self, *args: str, input: bytes | None = None) -> Result:
        """devsecrets in-process, as this person, in their clone."""
        return self.user.run(*args, input=input)

    def commit_all(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)


def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    subprocess.run(
        ["git", "init", "-q", "--bare", "-b", "main", str(bare)],
        check=True,
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"},
    )
    return bare


def person(tmp_path: Path, name: str, bare: Path, *, clone: bool) -> Person:
    project = tmp_path / f"clone-{name}"
    someone = Person(make_user(tmp_path, name, project), name)
    someone.user.env["USER"] = name
    (someone.user.home / ".gitconfig").write_text("")
    if clone:
        subprocess.run(
            ["git", "clone", "-q", str(bare), str(project)],
            check=True,
            env=someone.env(),
            capture_output=True,
        )
    else:
        project.mkdir()
        someone.git("init", "-q", "-b", "main")
        someone.git("remote", "add", "origin", str(bare))
    return someone

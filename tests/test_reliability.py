"""Small runs of bench/reliability.py's scenarios (the script runs the big trial counts and
writes RELIABILITY.md). The concurrent-writer check is shown to fail when the lock is off."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "reliability.py"


@pytest.fixture(scope="module")
def rel():
    spec = importlib.util.spec_from_file_location("reliability", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["reliability"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _remove_scratch_dirs(monkeypatch: pytest.MonkeyPatch):
    """The scenarios make their runtime dirs on /dev/shm with mkdtemp; remove exactly the ones
    this test made, so a test run leaves nothing behind there."""
    made: list[str] = []
    real = tempfile.mkdtemp

    def recording(*args, **kwargs):
        path = real(*args, **kwargs)
        made.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    yield
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def editor(tmp_path: Path) -> Path:
    path = tmp_path / "editor.sh"
    path.write_text('#!/bin/sh\nprintf %s "$1" > "$2"\n')
    path.chmod(0o700)
    return path


@pytest.mark.parametrize("command", ["set", "edit", "rm", "recipients rm", "rekey"])
def test_sigkill_leaves_old_or_new_and_recipients_rm_finishes(rel, tmp_path, editor, command):
    team = rel.make_team(tmp_path / "team", secrets=4)
    result = rel.kill_scenario(team, command, 4, editor)
    assert result.trials == 4
    assert result.failures == 0, result.notes


def test_concurrent_writers_with_the_lock_lose_nothing(rel, tmp_path):
    result = rel.concurrent_scenario(tmp_path, rounds=4, lock=True)
    assert result.failures == 0, result.notes


def test_the_concurrent_check_fails_when_the_lock_is_disabled(rel, tmp_path):
    result = rel.concurrent_scenario(tmp_path, rounds=4, lock=False)
    assert result.failures > 0  # the check above would catch a missing lock


def test_report_lists_every_scenario(rel, tmp_path):
    results = [rel.Result("kill-set", "x", trials=3), rel.Result("bytes", "y", trials=9)]
    out = tmp_path / "RELIABILITY.md"
    rel.write_report(results, out, ["--quick"], 60.0)
    text = out.read_text()
    assert "| kill-set | x | 3 | 0 | 0 |" in text
    assert "| bytes | y | 9 | 0 | 0 |" in text


def test_a_newer_run_supersedes_a_scenarios_rows_and_keeps_the_others(rel, tmp_path):
    out = tmp_path / "RELIABILITY.md"
    old = [rel.Result("signals-up", "x", trials=10, failures=2, notes=["hung"])]
    old.append(rel.Result("bytes", "y", trials=9))
    rel.write_report(old, out, ["--only", "signals", "bytes"], 60.0)
    text = (
        out.read_text().replace("<!-- run ", "<!-- run old").replace("<!-- /run ", "<!-- /run old")
    )
    out.write_text(text)  # as if written by another process
    rel.write_report([rel.Result("signals-up", "x", trials=50)], out, ["--only", "signals"], 60.0)
    text = out.read_text()
    assert "| signals-up | x | 50 | 0 | 0 |" in text
    assert "| signals-up | x | 10 | 2 | 0 |" not in text and "hung" not in text
    assert "| bytes | y | 9 | 0 | 0 |" in text  # the older run's other scenario stays


@pytest.mark.skipif(os.geteuid() != 0, reason="creates throwaway users: needs root")
def test_the_other_user_scenarios_find_nothing(rel):
    if not (os.environ.get("CI") == "true" or os.environ.get("DEVSECRETS_TEST_USERS") == "1"):
        pytest.skip("creates throwaway users: only in CI or with DEVSECRETS_TEST_USERS=1")
    for result in (
        rel.squat_scenario(4),
        rel.read_scenario(1),
        rel.swap_scenario(1.0),
        rel.sudo_e_scenario(3),
    ):
        assert result.trials > 0 and result.failures == 0, (result.name, result.notes)

"""Live updates that behave like Swarm (issue 9): batches, restarts, directories that move."""

from __future__ import annotations

import shutil
import time

import pytest
from conftest import User
from test_live import running  # noqa: F401 - the fixture

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_the_watch_survives_the_store_being_removed_and_recreated(alice: User, running):  # noqa: F811
    alice.run("set", "x", input=b"one")
    run = running({"app": {"command": ["sleep", "600"], "secrets": ["x"]}})
    saved = alice.store.parent / "saved-store"
    shutil.copytree(alice.store, saved)
    shutil.rmtree(alice.store)  # git checkout of a branch without .devsecrets/
    time.sleep(0.6)  # past a directory check, so the watch really sees it gone
    shutil.copytree(saved, alice.store)  # and back
    time.sleep(0.6)
    alice.run("set", "x", input=b"two")
    run.wait(lambda: run.exec("app", "cat /run/secrets/x") == "two", "the change after the return")
    assert run.proc.poll() is None
    err = run.stop()
    assert f"{alice.store} is gone; keeping what runs, waiting for it to return" in err
    assert f"{alice.store} is back; following it again" in err
    assert "x changed → app" in err

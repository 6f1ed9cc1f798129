"""Writes are atomic and serialized: SIGKILL at any moment leaves the old or the new value."""

from __future__ import annotations

import random
import subprocess
import threading
import time

from conftest import User, devsecrets_cmd


def test_sigkill_during_set_never_corrupts_the_store(alice: User):
    old, new = b"A" * 300_000, b"B" * 300_000  # large enough that a write takes a while
    assert alice.run("set", "x", input=old).exit_code == 0
    env = alice.subprocess_env()
    argv = [*devsecrets_cmd(), "--store", str(alice.store), "set", "x"]
    rng = random.Random(1234)  # noqa: S311 - timing jitter, not crypto  # fixed seed: a failure can be replayed
    current = {old}
    for attempt in range(25):
        value = new if attempt % 2 else old
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        proc.stdin.write(value)
        proc.stdin.close()
        time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        proc.wait()
        got = alice.run("get", "x")
        assert got.exit_code == 0, got.stderr
        assert got.stdout in (old, new), f"attempt {attempt}: torn value of {len(got.stdout)} bytes"
        current.add(got.stdout)
    assert current == {old, new}, "the kill never landed after a completed write; widen the window"
    # a killed writer may leave a hidden temp file (gitignored); the next writer removes it
    assert alice.run("set", "x", input=b"final").exit_code == 0
    assert {p.name for p in alice.store.iterdir()} == {
        "x.sops.yaml",
        "recipients.yaml",
        ".gitignore",
        ".lock",
    }


def test_a_writer_waits_for_the_lock(alice: User):
    from devsecrets.store import Store

    alice.run("set", "x", input=b"before")
    argv = [*devsecrets_cmd(), "--store", str(alice.store), "set", "x"]
    with Store(alice.store).lock():
        proc = subprocess.Popen(argv, env=alice.subprocess_env(), stdin=subprocess.PIPE)
        proc.stdin.write(b"after")
        proc.stdin.close()
        time.sleep(1.0)
        assert proc.poll() is None, "set did not wait for the lock"
        assert alice.run("get", "x").stdout == b"before"
    assert proc.wait(timeout=20) == 0
    assert alice.run("get", "x").stdout == b"after"


def test_concurrent_writers_all_succeed(alice: User):
    """Many writers at once: every one succeeds and the file is always one writer's value."""
    env = alice.subprocess_env()
    argv = [*devsecrets_cmd(), "--store", str(alice.store), "set", "x"]
    values = [bytes([65 + i]) * 50_000 for i in range(8)]
    results: list[int] = []

    def writer(value: bytes) -> None:
        proc = subprocess.run(argv, env=env, input=value, capture_output=True, check=False)
        results.append(proc.returncode)

    threads = [threading.Thread(target=writer, args=(v,)) for v in values]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0] * len(values)
    assert alice.run("get", "x").stdout in values

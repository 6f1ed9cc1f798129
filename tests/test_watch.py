"""The debouncer (with a fake clock), on-change policies, and the real observer once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from devsecrets.errors import UsageProblem
from devsecrets.live import Policy, parse_cli_policies, policies
from devsecrets.stack import read_model
from devsecrets.watch import Debouncer, Watcher


def test_a_burst_is_one_batch_after_the_quiet_period():
    d = Debouncer(quiet=0.02, max_wait=0.25)
    d.add([Path("a")], now=0.000)
    d.add([Path("b")], now=0.010)
    d.add([Path("a")], now=0.015)
    assert d.due(0.030) is None  # only 15 ms since the last event
    assert d.due(0.036) == {Path("a"), Path("b")}
    assert d.due(1.0) is None  # nothing left


def test_a_steady_stream_still_yields_batches():
    d = Debouncer(quiet=0.02, max_wait=0.25)
    batches, now = [], 0.0
    while now < 1.0:
        d.add([Path(f"f{now:.3f}")], now)
        now += 0.01  # faster than the quiet period, forever
        if batch := d.due(now):
            batches.append(batch)
    assert len(batches) >= 3  # max_wait forces progress
    assert sum(len(b) for b in batches) <= 100


def test_nothing_is_lost_between_batches():
    d = Debouncer(quiet=0.02, max_wait=0.25)
    seen: set[Path] = set()
    for i in range(50):
        d.add([Path(str(i))], now=i * 0.005)
        if batch := d.due(i * 0.005):
            seen |= batch
    seen |= d.due(10.0) or set()
    assert seen == {Path(str(i)) for i in range(50)}


def test_next_deadline():
    d = Debouncer(quiet=0.02, max_wait=0.25)
    assert d.next_deadline() is None
    d.add([Path("a")], now=1.0)
    assert d.next_deadline() == pytest.approx(1.02)


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("none", Policy("none")),
        ("restart", Policy("restart")),
        ("SIGHUP", Policy("signal", "SIGHUP")),
        ("sigusr1", Policy("signal", "SIGUSR1")),
    ],
)
def test_policies(text, policy):
    assert Policy.parse(text, "x") == policy


def test_bad_policies_are_usage_errors():
    with pytest.raises(UsageProblem, match="unknown on-change policy"):
        Policy.parse("reboot", "x")
    with pytest.raises(UsageProblem, match="SERVICE=POLICY"):
        parse_cli_policies(("api",))


def test_the_command_line_overrides_the_stack_file():
    model = read_model(
        {
            "name": "p",
            "services": {},
            "secrets": {},
            "x-devsecrets": {"on-change": {"api": "restart", "nginx": "SIGHUP"}},
        }
    )
    table = policies(model.on_change, parse_cli_policies(("api=none",)))
    assert table == {"api": Policy("none"), "nginx": Policy("signal", "SIGHUP")}


@pytest.mark.slow
def test_the_real_observer_reports_an_atomic_rename(tmp_path: Path):
    batches: list[set[Path]] = []
    got = threading.Event()

    def on_batch(paths: set[Path]) -> None:
        batches.append(paths)
        got.set()

    target = tmp_path / "x.sops.yaml"
    watcher = Watcher([tmp_path], lambda p: p.name == "x.sops.yaml", on_batch).start()
    try:
        (tmp_path / ".x.tmp").write_text("new")
        (tmp_path / ".x.tmp").rename(target)  # how the store writes
        assert got.wait(10), "no batch within 10 s"
        (tmp_path / "ignored.txt").write_text("x")
        time.sleep(0.2)
    finally:
        watcher.stop()
    assert batches == [{target}]


@pytest.mark.slow
def test_a_directory_removed_and_recreated_is_followed_again(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir()
    batches: list[set[Path]] = []
    lines: list[str] = []
    watcher = Watcher(
        [store], lambda p: p.suffix == ".yaml", batches.append, report=lines.append, recheck=0.05
    ).start()

    def wait_for(condition, what: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {lines}"
            time.sleep(0.01)

    try:
        (store / "a.yaml").write_text("1")
        wait_for(lambda: batches, "the first change")
        (store / "a.yaml").unlink()
        store.rmdir()  # git checkout of a branch without it
        wait_for(lambda: any("is gone" in line for line in lines), "the gone line")
        store.mkdir()
        (store / "b.yaml").write_text("2")  # may land before the new watch: still reported
        wait_for(lambda: any(store / "b.yaml" in b for b in batches), "b after the return")
        before = len(batches)
        (store / "c.yaml").write_text("3")  # and later changes arrive as before
        wait_for(lambda: any(store / "c.yaml" in b for b in batches[before:]), "c")
    finally:
        watcher.stop()
    assert lines[0] == f"{store} is gone; keeping what runs, waiting for it to return"
    assert lines[1] == f"{store} is back; following it again"
    assert len(lines) == 2

"""The debouncer (with a fake clock), on-change policies, and the real observer once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from devsecrets.atomic import write_atomic
from devsecrets.compose import Compose, ComposeProject
from devsecrets.errors import StackError, UsageProblem
from devsecrets.keys import Identities
from devsecrets.layout import plan
from devsecrets.live import LiveStack, parse_cli_policies, policies
from devsecrets.session import Session
from devsecrets.stack import Action, Policy, read_model
from devsecrets.store import Store
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
        ("none", Policy(Action.NONE)),
        ("restart", Policy(Action.RESTART)),
        ("SIGHUP", Policy(Action.SIGNAL, "SIGHUP")),
        ("sigusr1", Policy(Action.SIGNAL, "SIGUSR1")),
    ],
)
def test_policies(text, policy):
    assert Policy.parse(text, "x") == policy


def test_bad_policies_on_the_command_line_are_usage_errors():
    with pytest.raises(UsageProblem, match="unknown on-change policy"):
        parse_cli_policies(("api=reboot",))
    with pytest.raises(UsageProblem, match="SERVICE=POLICY"):
        parse_cli_policies(("api",))


def test_a_bad_policy_in_the_stack_file_is_a_stack_error():
    with pytest.raises(StackError, match=r"x-devsecrets.on-change.api: unknown on-change policy"):
        read_model({"name": "p", "services": {}, "x-devsecrets": {"on-change": {"api": "reboot"}}})


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
    assert table == {"api": Policy(Action.NONE), "nginx": Policy(Action.SIGNAL, "SIGHUP")}


def live_stack(tmp_path: Path) -> LiveStack:
    """A LiveStack over a store and a stack file in tmp_path, with nothing running."""
    (tmp_path / ".devsecrets").mkdir()
    (tmp_path / "stack").mkdir()
    (tmp_path / "cwd").mkdir()
    stack = tmp_path / "stack" / "docker-stack.yml"
    stack.write_text("services: {}\n")
    found = Compose(("docker", "compose"), (2, 30, 0), True)
    model = read_model({"name": "p", "services": {}})
    session = Session(
        project=ComposeProject(found, ("-f", str(stack)), (stack,)),
        model=model,
        layout=plan(model, set()),
        project_dir=tmp_path / "runtime" / "p",
        override=tmp_path / "runtime" / "p" / "override.yml",
        cwd=tmp_path / "cwd",
        env={},
        created_dir=False,
    )
    return LiveStack(session, Store(tmp_path / ".devsecrets"), Identities(), {}, report=print)


@pytest.mark.parametrize(
    ("relative", "wanted"),
    [
        (".devsecrets/x.sops.yaml", True),
        (".devsecrets/recipients.yaml", True),
        (".devsecrets/.x.sops.yaml.tmp-12-abcd", False),  # the store's temp file
        (".devsecrets/.lock", False),
        (".devsecrets/.hidden.sops.yaml", False),  # not a secret: Store.names() skips it
        (".devsecrets/notes.txt", False),
        ("stack/docker-stack.yml", True),
        ("stack/.env", True),  # compose reads .env beside the first stack file
        ("cwd/.env", True),  # and in the working directory
        ("stack/other.yml", False),
        ("stack/.docker-stack.yml.swp", False),  # an editor's swap file
        ("elsewhere/.env", False),
    ],
)
def test_live_stack_wants_the_store_and_the_stack_files_only(tmp_path, relative, wanted):
    live = live_stack(tmp_path)
    assert live.wanted(tmp_path / relative) is wanted
    assert {d.resolve() for d in live.directories()} == {
        (tmp_path / ".devsecrets").resolve(),
        (tmp_path / "stack").resolve(),
        (tmp_path / "cwd").resolve(),
    }


@pytest.mark.slow
def test_the_real_observer_with_live_stacks_filter(tmp_path: Path):
    """The store's own write (temp file + rename) is one batch naming the secret's file;
    the lock, temp files and unrelated files never reach a batch."""
    live = live_stack(tmp_path)
    batches: list[set[Path]] = []
    got = threading.Semaphore(0)

    def on_batch(paths: set[Path]) -> None:
        batches.append({p.resolve() for p in paths})
        got.release()

    store = tmp_path / ".devsecrets"
    watcher = Watcher(live.directories(), live.wanted, on_batch).start()
    try:
        write_atomic(store / "x.sops.yaml", b"new")  # how the store writes
        assert got.acquire(timeout=10), "no batch within 10 s"
        (store / ".lock").write_text("")
        (store / "notes.txt").write_text("x")
        (tmp_path / "stack" / "other.yml").write_text("x")
        write_atomic(store / "recipients.yaml", b"a: b")  # a wanted change after them
        assert got.acquire(timeout=10), "no second batch within 10 s"
    finally:
        watcher.stop()
    assert batches == [{(store / "x.sops.yaml").resolve()}, {(store / "recipients.yaml").resolve()}]


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

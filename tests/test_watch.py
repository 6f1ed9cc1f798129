"""The debouncer (with a fake clock), on-change policies, and the real observer once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import User

from devsecrets import watch
from devsecrets.atomic import write_atomic
from devsecrets.compose import Compose, ComposeProject
from devsecrets.errors import StackError, UsageProblem
from devsecrets.keys import Identities, find_identities
from devsecrets.layout import plan
from devsecrets.live import LiveStack, parse_cli_policies, policies
from devsecrets.session import Session
from devsecrets.stack import Action, Policy, read_model
from devsecrets.store import LOCK_FILE, Store
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


def test_a_released_writer_lock_makes_what_it_wrote_due_at_once():
    d = Debouncer(quiet=0.02, max_wait=0.25)
    d.add([Path("cert")], now=0.000)
    d.add([Path("key")], now=0.001)
    assert d.due(0.002) is None
    d.released()  # the writer closed its lock: both files are whole
    assert d.next_deadline() == pytest.approx(0.0)
    assert d.due(0.002) == {Path("cert"), Path("key")}
    d.released()  # nothing pending: a later lock-free change still waits its quiet period
    d.add([Path("c")], now=0.003)
    assert d.due(0.004) is None
    assert d.due(0.024) == {Path("c")}


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


@pytest.fixture(params=["inotify", "watchdog"])
def backend(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each real-observer test runs on Linux's inotify (read by the watch thread) and on the
    watchdog observer used elsewhere."""
    if request.param == "watchdog":
        monkeypatch.setattr(watch._Inotify, "open", classmethod(lambda cls, changed: None))
    return str(request.param)


@pytest.mark.slow
def test_the_real_observer_with_live_stacks_filter(tmp_path: Path, backend: str):
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
    observers = [t for t in threading.enumerate() if "Observer" in type(t).__name__]
    assert bool(observers) is (backend == "watchdog")  # inotify: no watchdog thread at all
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
def test_a_directory_removed_and_recreated_is_followed_again(tmp_path: Path, backend: str):
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


@pytest.mark.slow
def test_a_locked_write_is_one_batch_due_when_the_writer_lets_go(
    alice: User, tmp_path: Path, backend: str
):
    """Two secrets written under the store's lock arrive as one batch as soon as the writer
    closes the lock (not after the quiet period); a burst without the lock (git) still waits
    for its quiet period and is one batch."""
    store = Store(alice.store)
    ids = find_identities(alice.env_for_core())
    store.write_many({"a": b"1", "b": b"1"}, ids)
    quiet = 1.5  # far longer than a locked write takes: only the lock's release can be early
    batches: list[tuple[float, set[str]]] = []
    got = threading.Semaphore(0)

    def on_batch(paths: set[Path]) -> None:
        batches.append((time.monotonic(), {p.name for p in paths}))
        got.release()

    watcher = Watcher(
        [alice.store], lambda p: p.name.endswith(".sops.yaml"), on_batch,
        debouncer=Debouncer(quiet=quiet, max_wait=10), writer_lock=alice.store / LOCK_FILE,
    ).start()  # fmt: skip
    try:
        started = time.monotonic()
        store.write_many({"a": b"2", "b": b"2"}, ids)
        assert got.acquire(timeout=10), "no batch"
        assert batches[0][0] - started < quiet / 2, "the batch waited for the quiet period"
        assert batches[0][1] == {"a.sops.yaml", "b.sops.yaml"}
        started = time.monotonic()
        for name in ("a", "b"):  # as git checkout writes: no lock
            (alice.store / f"{name}.sops.yaml").write_bytes(b"x")
            time.sleep(0.05)
        assert got.acquire(timeout=10), "no second batch"
        assert batches[1][0] - started >= quiet
        assert batches[1][1] == {"a.sops.yaml", "b.sops.yaml"}
    finally:
        watcher.stop()
    assert len(batches) == 2


@pytest.mark.slow
def test_a_bug_in_the_watch_thread_is_one_line_and_the_watch_goes_on(tmp_path: Path, backend: str):
    store = tmp_path / "store"
    store.mkdir()
    batches: list[set[Path]] = []
    lines: list[str] = []
    calls = {"n": 0}

    def wanted(path: Path) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug")
        return path.suffix == ".yaml"

    watcher = Watcher([store], wanted, batches.append, report=lines.append).start()
    try:
        (store / "a.yaml").write_text("1")  # its first event meets the bug
        deadline = time.monotonic() + 10
        while not any(store / "b.yaml" in b for b in batches):
            assert time.monotonic() < deadline, f"the watch went silent: {lines}"
            if not (store / "b.yaml").exists() and lines:
                (store / "b.yaml").write_text("2")
            time.sleep(0.01)
    finally:
        watcher.stop()
    assert lines[0] == "internal error in the watch (RuntimeError); still watching"

#!/usr/bin/env python3
"""Fault and hostile-input trials for devsecrets; writes RELIABILITY.md with every scenario,
its trial count and its failures (the target is zero everywhere).

  bench/reliability.py [--quick] [--out RELIABILITY.md] [--only NAME ...]

Scenarios (each trial starts from a fresh copy of a store; no secret value is ever printed):
  kill-*        SIGKILL of `set`, `edit`, `rm`, `recipients rm`, `rekey` at a random moment of
                their work (the child imports devsecrets first, says "ready", then the kill
                lands within the measured duration of the command). Afterwards: every secret
                reads back as its old or its new value, temp files go with the next writer;
                an interrupted `recipients rm` is reported (`pending`) and finishes when re-run.
  concurrent    8 writers started at once (4 `recipients add`, 4 `set`), with the writers' lock
                and with it disabled (a patch in the child only). Afterwards: every member and
                secret is there and every file is wrapped for exactly the recipients. The
                lock-disabled run is expected to FAIL: it shows the check catches a missing lock.
  bytes         every single-byte change (all 255 other values) and every truncation of a store
                file: `read` gives the exact value or a DevsecretsError, nothing else.
  hypothesis    tests/test_hostile_input.py with many examples (hostile compose models through
                every step to materialize; random and mutated store files).
  signals       SIGINT/TERM/HUP/QUIT/KILL of `edit`, and (with a Docker engine) of a foreground
                `up` and of `watch`, at a random moment: afterwards (after `down` for up/watch,
                and for KILL after the next command's cleanup) no file under the runtime root or
                the project holds the value.
  users-*       attacks by another local user, run as root with throwaway accounts (`useradd`,
                removed afterwards), as tests/test_multi_user.py does: squatting the default
                runtime dir (users-squat), reading or claiming a user's runtime dir
                (users-read), swapping a component of root's runtime path for a symlink while
                root uses it (users-swap), root with another user's XDG_RUNTIME_DIR, as
                `sudo -E` keeps it (users-sudo-e). Skipped (reported) when not root.
Needs: the repository on PYTHONPATH (run from its root); Docker and the image in BENCH_IMAGE
(default devsecrets-test-busybox) for the up/watch signal trials, else they are reported skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import random  # timing of faults, not secrets
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devsecrets.errors import DevsecretsError  # noqa: E402
from devsecrets.keys import create_key_file, find_identities  # noqa: E402
from devsecrets.store import Store, init_store  # noqa: E402

CANARY = "canary-reliability-"  # + a per-secret suffix; searched for, never printed
WRAPPER = """
import os, sys
args = sys.argv[1:]
import devsecrets.cli, devsecrets.entry, devsecrets.store, devsecrets.edit, devsecrets.keys
if os.environ.get("RELIABILITY_NO_LOCK") == "1":  # only this script sets it, in a child
    import contextlib
    devsecrets.store.Store.lock = lambda self: contextlib.nullcontext()
go = os.environ.get("RELIABILITY_GO")
os.write(1, b"ready\\n")
if go:
    while not os.path.exists(go):
        pass
sys.argv = ["devsecrets", *args]  # as the console script runs it
sys.exit(devsecrets.entry.main())
"""


@dataclass
class Result:
    name: str
    what: str
    trials: int = 0
    failures: int = 0
    notes: list[str] = field(default_factory=list)
    expect_failures: bool = False

    def fail(self, why: str) -> None:
        self.failures += 1
        if len(self.notes) < 5:
            self.notes.append(why)


@dataclass
class Team:
    root: Path
    env: dict[str, str]
    identities: Any
    pristine: Path
    values: dict[str, bytes]
    bob_key: str

    @property
    def store_dir(self) -> Path:
        return self.root / "project" / ".devsecrets"

    def store(self) -> Store:
        return Store(self.store_dir)

    def reset(self) -> None:
        shutil.rmtree(self.store_dir, ignore_errors=True)
        shutil.copytree(self.pristine, self.store_dir, symlinks=True)


def make_team(base: Path, secrets: int, bob: bool = True) -> Team:
    home = base / "home"
    home.mkdir(parents=True)
    key_file = home / "keys.txt"
    recipient = create_key_file(key_file, "2026-01-01T00:00:00Z")
    runtime = Path(tempfile.mkdtemp(prefix="reliability-", dir="/dev/shm"))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "SOPS_AGE_KEY_FILE": str(key_file),
        "DEVSECRETS_RUNTIME_DIR": str(runtime / "rt"),
        "PYTHONPATH": str(REPO),
    }
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    env["DOCKER_CONFIG"] = os.environ.get("DOCKER_CONFIG", str(Path.home() / ".docker"))
    identities = find_identities(env)
    store, _ = init_store(base / "project" / ".devsecrets", "alice", recipient)
    values = {f"s{i}": f"{CANARY}{i}-{os.urandom(3).hex()}".encode() for i in range(secrets)}
    for name, value in values.items():
        store.write(name, value, identities)
    bob_key = ""
    if bob:
        bob_key = create_key_file(base / "bob.txt", "2026-01-01T00:00:00Z")
        store.add_recipient("bob", bob_key, identities)
    pristine = base / "pristine"
    shutil.copytree(store.root, pristine, symlinks=True)
    return Team(base, env, identities, pristine, values, bob_key)


def spawn(
    team: Team, args: list[str], extra: dict[str, str] | None = None, *, ignore: bool = False
) -> subprocess.Popen:
    """`ignore`: start it with the stop signals ignored (see `ignoring_stops`)."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, "--store", str(team.store_dir), *args],
        cwd=team.root / "project",
        env={**team.env, **(extra or {})},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=ignoring_stops if ignore else None,  # noqa: PLW1509
    )
    return child


def wait_ready(child: subprocess.Popen) -> None:
    assert child.stdout is not None
    line = child.stdout.readline()
    if line != b"ready\n":
        raise RuntimeError(f"child did not start: {line!r}")


def timed_run(team: Team, args: list[str], stdin: bytes = b"") -> float:
    child = spawn(team, args)
    wait_ready(child)
    start = time.monotonic()
    child.communicate(stdin, timeout=120)
    return time.monotonic() - start


def holding(store: Store, key: str) -> list[str]:
    return [n for n in store.names() if key in {s.recipient for s in store._load(n).age}]


# -- SIGKILL of store commands -------------------------------------------------------------------


def kill_scenario(team: Team, command: str, trials: int, editor: Path) -> Result:
    result = Result(f"kill-{command.replace(' ', '-')}", f"SIGKILL during `{command}`")
    new = f"{CANARY}new-{os.urandom(3).hex()}".encode()
    args = {
        "set": ["set", "s0"],
        "edit": ["edit", "s0"],
        "rm": ["rm", "s0"],
        "recipients rm": ["recipients", "rm", "bob"],
        "rekey": ["rekey"],
    }[command]
    extra = {"EDITOR": f"{editor} {new.decode()}"} if command == "edit" else {}
    team.env.update(extra)
    durations = []
    for _ in range(2):
        team.reset()
        durations.append(timed_run(team, args, new))
    duration = max(durations)
    mid = 0
    for _ in range(trials):
        team.reset()
        before = {p.name: p.read_bytes() for p in team.store_dir.iterdir() if p.is_file()}
        child = spawn(team, args)
        wait_ready(child)
        assert child.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            child.stdin.write(new)
            child.stdin.close()
        time.sleep(random.uniform(0, duration * 1.1))  # noqa: S311
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
        result.trials += 1
        after = {p.name: p.read_bytes() for p in team.store_dir.iterdir() if p.is_file()}
        mid += after != before and child.returncode == -signal.SIGKILL
        try:
            _check_after_kill(team, command, new, result)
        except DevsecretsError as e:
            result.fail(f"{type(e).__name__}: {e.message}")
    result.notes.insert(0, f"{mid} of {result.trials} kills landed after the store had changed")
    for key in extra:
        team.env.pop(key, None)
    return result


def _check_after_kill(team: Team, command: str, new: bytes, result: Result) -> None:
    store = team.store()
    if command == "recipients rm":
        members = store.recipients()
        if "bob" not in members and holding(store, team.bob_key) and store.pending() is None:
            result.fail("recipients rm half done and not reported as incomplete")
            return
        if "bob" in members or store.pending() is not None:
            store.remove_recipient("bob", team.identities)  # does it, or finishes it
        if holding(store, team.bob_key) or store.pending() is not None:
            result.fail("re-running recipients rm did not finish it")
    for name, value in team.values.items():
        try:
            got = store.read(name, team.identities).value
        except DevsecretsError as e:
            if name == "s0" and command == "rm" and "no secret" in e.message:
                continue
            raise
        allowed = {value, new} if name == "s0" and command in ("set", "edit") else {value}
        if got not in allowed:
            result.fail(f"{name} holds neither its old nor its new value")
    store.write("after", b"x", team.identities)  # the next writer removes temp files
    left = [p.name for p in store.root.iterdir() if ".tmp-" in p.name]
    if left:
        result.fail(f"temp files left after the next write: {len(left)}")
    if command in ("rekey", "recipients rm"):
        wanted = set(store.recipients().values())
        for name in store.names():
            if {s.recipient for s in store._load(name).age} != wanted and name != "after":
                result.fail(f"{name} is not wrapped for exactly recipients.yaml")


# -- concurrent writers --------------------------------------------------------------------------


def concurrent_scenario(base: Path, rounds: int, lock: bool) -> Result:
    result = Result(
        "concurrent" + ("" if lock else "-no-lock"),
        "8 writers at once (4 `recipients add`, 4 `set`)"
        + ("" if lock else ", writers' lock disabled in the children"),
        expect_failures=not lock,
    )
    team = make_team(base, secrets=6, bob=False)
    keys = [create_key_file(base / f"m{i}.txt", "2026-01-01T00:00:00Z") for i in range(4)]
    for _ in range(rounds):
        team.reset()
        go = base / "go"
        go.unlink(missing_ok=True)
        extra = {"RELIABILITY_GO": str(go), **({} if lock else {"RELIABILITY_NO_LOCK": "1"})}
        children = [
            spawn(team, ["recipients", "add", f"m{i}", k], extra) for i, k in enumerate(keys)
        ]
        children += [spawn(team, ["set", f"w{i}"], extra) for i in range(4)]
        for child in children:
            wait_ready(child)
        go.touch()
        errors = []
        for i, child in enumerate(children):
            _, err = child.communicate(f"{CANARY}w{i - 4}".encode() if i >= 4 else b"", timeout=120)
            if child.returncode:
                errors.append(err.decode(errors="replace").strip().splitlines()[-1:])
        result.trials += 1
        store = team.store()
        problems = []
        if errors:
            problems.append(f"a writer failed: {errors[0]}")
        members = store.recipients()
        if not all(f"m{i}" in members for i in range(4)):
            problems.append("a member was lost from recipients.yaml")
        for i in range(4):
            try:
                if store.read(f"w{i}", team.identities).value != f"{CANARY}w{i}".encode():
                    problems.append(f"w{i} has a wrong value")
            except DevsecretsError as e:
                problems.append(f"w{i}: {type(e).__name__}")
        wanted = set(members.values())
        if any({s.recipient for s in store._load(n).age} != wanted for n in store.names()):
            problems.append("a file is not wrapped for exactly recipients.yaml")
        if problems:
            result.fail("; ".join(sorted(set(problems))))
    return result


# -- every byte ----------------------------------------------------------------------------------


def bytes_scenario(base: Path, quick: bool) -> Result:
    result = Result("bytes", "every single-byte change and every truncation of a store file")
    store_dir = Path(tempfile.mkdtemp(prefix="reliability-bytes-", dir="/dev/shm"))
    try:
        team = make_team(base, secrets=1, bob=False)
        shutil.copytree(team.pristine, store_dir / "s", dirs_exist_ok=True)
        store = Store(store_dir / "s")
        path = store.root / "s0.sops.yaml"
        original = path.read_bytes()
        value = team.values["s0"]
        step = 17 if quick else 1

        def attempt(text: bytes) -> None:
            path.write_bytes(text)
            result.trials += 1
            try:
                got = store.read("s0", team.identities).value
            except DevsecretsError:
                return
            except Exception as e:  # noqa: BLE001 - that is what we count
                result.fail(f"{type(e).__name__} at a mutation")
                return
            if got != value:
                result.fail("a mutation gave different bytes")

        for position in range(0, len(original), step):
            for byte in range(256):
                if byte != original[position]:
                    attempt(original[:position] + bytes([byte]) + original[position + 1 :])
        for length in range(len(original)):
            attempt(original[:length])
        result.notes.append(
            f"file of {len(original)} bytes" + (", every 17th position" if quick else "")
        )
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
    return result


# -- hypothesis ----------------------------------------------------------------------------------


def hypothesis_scenario(examples: int) -> Result:
    result = Result(
        "hypothesis", "hostile compose models and store files (tests/test_hostile_input.py)"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_hostile_input.py",
        ],
        cwd=REPO,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DEVSECRETS_HYPOTHESIS_EXAMPLES": str(examples),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    result.trials = 3 * examples
    if run.returncode != 0:
        failed = [ln for ln in run.stdout.splitlines() if ln.startswith("FAILED")]
        for line in failed or ["pytest failed"]:
            result.fail(line[:160])
    result.notes.append(f"3 properties x {examples} examples each (hypothesis max_examples)")
    return result


# -- signals -------------------------------------------------------------------------------------

HANG = 30  # seconds a signalled process may take to exit
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGKILL]
STOPS = SIGNALS[:4]


def plaintext_files(roots: list[Path], values: list[bytes]) -> list[str]:
    found = []
    for root in roots:
        if not root.exists():
            continue
        for path in root.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink():
                    data = path.read_bytes()
                    if any(v in data for v in values):
                        found.append(str(path.relative_to(root)))
    return found


def ignoring_stops() -> None:
    """preexec_fn: the child starts with the stop signals ignored, as a non-interactive
    shell's background job (`cmd &` ignores SIGINT and SIGQUIT) or `nohup` (SIGHUP) leaves
    them. Every other trial runs so."""
    for signum in STOPS:
        signal.signal(signum, signal.SIG_IGN)


def until_started(child: subprocess.Popen, sig: int) -> None:
    """Until the child no longer ignores `sig` (devsecrets resets the stop signals its parent
    ignored as it starts): one that lands before is discarded by the kernel, as `nohup`
    intends, whatever the program."""
    if sig not in STOPS:
        return
    deadline = time.monotonic() + 30
    while child.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, StopIteration):
            status = Path(f"/proc/{child.pid}/status").read_text().splitlines()
            ignored = int(
                next(line for line in status if line.startswith("SigIgn:")).split()[1], 16
            )
            if not ignored & (1 << (sig - 1)):
                return
        time.sleep(0.005)


def send(child: subprocess.Popen, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if group else os.kill)(child.pid, sig)


def check_exit(result: Result, sig: int, code: int | None) -> None:
    """128+N from the plaintext guard; -N (the default action) for a signal that landed before
    the guard was in place (nothing written yet) and for SIGKILL."""
    if code is not None and code not in (128 + sig, -sig):
        result.fail(f"{signal.Signals(sig).name}: exit {code}, not {128 + sig}")


def edit_signal_scenario(team: Team, per_signal: int, editor: Path, *, group: bool) -> Result:
    result = Result(
        "signals-edit" + ("-group" if group else ""),
        "SIGINT/TERM/HUP/QUIT/KILL of `edit` (editor open), "
        + ("to its process group" if group else "to its process only"),
    )
    runtime = Path(team.env["DEVSECRETS_RUNTIME_DIR"])
    new = f"{CANARY}edited-{os.urandom(3).hex()}".encode()
    slow_editor = team.root / "slow-editor.sh"
    slow_editor.write_text(f'#!/bin/sh\nsleep 0.3\nexec {editor} "$@"\n')
    slow_editor.chmod(0o700)
    team.reset()
    extra = {"EDITOR": f"{slow_editor} {new.decode()}"}
    child = spawn(team, ["edit", "s0"], extra)
    wait_ready(child)
    start = time.monotonic()  # from "ready": the signals below are sent after it too
    child.communicate(timeout=60)
    duration = time.monotonic() - start
    values = [*team.values.values(), new]
    exposed = ignored = after_end = 0
    for sig in SIGNALS:
        for trial in range(per_signal):
            team.reset()
            child = spawn(team, ["edit", "s0"], extra, ignore=trial % 2 == 1)
            ignored += trial % 2
            wait_ready(child)
            if trial % 2:
                until_started(child, sig)
            time.sleep(random.uniform(0, duration))  # noqa: S311
            exposed += bool(plaintext_files([runtime], [team.values["s0"], new]))
            late = finished(child)  # the edit was over: the signal tests nothing
            send(child, sig, group or sig == signal.SIGKILL)
            try:
                child.communicate(timeout=HANG)
            except subprocess.TimeoutExpired:
                result.fail(f"{signal.Signals(sig).name}: did not exit within {HANG} s")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)  # the editor, if it outlived devsecrets
            child.communicate()
            after_end += late
            check_exit(result, sig, None if late else child.returncode)
            time.sleep(0.05)
            if sig == signal.SIGKILL:  # nobody can wipe on SIGKILL: the next edit cleans up
                quiet = {"EDITOR": "true"}
                subprocess.run(
                    [sys.executable, "-m", "devsecrets", "--store", str(team.store_dir)]
                    + ["edit", "s1"],
                    env={**team.env, **quiet},
                    capture_output=True,
                    check=False,
                    timeout=60,
                )
            result.trials += 1
            left = plaintext_files([runtime, team.root / "project"], values[1:] + [new])
            left += [p.name for p in (team.root / "project").glob("core*")]
            if left:
                result.fail(f"{signal.Signals(sig).name}: plaintext left in {left[:3]}")
    result.notes.append(f"{exposed} of {result.trials} signals landed while the copy was on tmpfs")
    result.notes.append(f"{ignored} of {result.trials} started with the stop signals ignored")
    result.notes.append(
        f"{after_end} of {result.trials} landed once the edit had ended (exit code not checked)"
    )
    return result


def finished(child: subprocess.Popen) -> bool:
    """The child has exited (maybe not reaped yet: a zombie)."""
    if child.poll() is not None:
        return True
    try:
        stat_line = Path(f"/proc/{child.pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rpartition(")")[2].split()[0] in ("Z", "X")


def docker_ok(image: str) -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker engine reachable"
    if subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, check=False
    ).returncode:
        return f"image {image} missing (run the docker tests once to build it)"
    return None


def stack_signal_scenario(
    team: Team, command: str, per_signal: int, image: str, *, group: bool = False
) -> Result:
    """`group`: the signal goes to the whole process group (devsecrets and compose), as a
    terminal sends Ctrl-C, Ctrl-\\ and a hang-up; else to the devsecrets process alone, as
    `kill PID` does."""
    result = Result(
        f"signals-{command}" + ("-group" if group else ""),
        f"SIGINT/TERM/HUP/QUIT/KILL of `{command}`, "
        + ("to its process group (as a terminal sends them)" if group else "to its process only"),
    )
    why = docker_ok(image)
    if why:
        result.notes.append(f"skipped: {why}")
        return result
    import yaml

    project = team.root / "project"
    names = sorted(team.values)[:2]
    (project / "docker-stack.yml").write_text(
        yaml.safe_dump(
            {
                "services": {
                    "app": {
                        "image": image,
                        "network_mode": "none",
                        "stop_signal": "SIGKILL",
                        "command": ["sleep", "600"],
                        "secrets": names,
                    }
                },
                "secrets": {n: {"external": True} for n in names},
            }
        )
    )
    runtime = Path(team.env["DEVSECRETS_RUNTIME_DIR"])
    compose_project = f"reliab{os.getpid()}"
    env = {**team.env, "COMPOSE_PROJECT_NAME": compose_project}
    ds = [sys.executable, "-m", "devsecrets", "--store", str(team.store_dir)]
    values = [team.values[n] for n in names]

    def down() -> None:
        subprocess.run(
            [*ds, "down"], cwd=project, env=env, capture_output=True, check=False, timeout=180
        )

    def running() -> int:
        label = f"label=com.docker.compose.project={compose_project}"
        out = subprocess.run(
            ["docker", "ps", "-q", "--filter", label], capture_output=True, text=True, check=False
        )
        return len(out.stdout.split())

    team.reset()
    down()
    start = time.monotonic()
    if command == "watch":
        subprocess.run(
            [*ds, "up", "-d"], cwd=project, env=env, capture_output=True, check=False, timeout=180
        )
        duration = 3.0
    else:
        up = subprocess.Popen(
            [*ds, "up"], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(8)
        duration = min(time.monotonic() - start, 8.0)
        up.send_signal(signal.SIGINT)
        up.wait(timeout=120)
    exposed = ignored = 0
    for sig in SIGNALS:
        for trial in range(per_signal):
            argv = [*ds, "watch"] if command == "watch" else [*ds, "up"]
            ignore = trial % 2 == 1
            ignored += ignore
            child = subprocess.Popen(
                argv,
                cwd=project,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=ignoring_stops if ignore else None,  # noqa: PLW1509
            )
            if ignore:  # sent before devsecrets runs at all, no program could see it
                until_started(child, sig)
            time.sleep(random.uniform(0.2, duration))  # noqa: S311
            exposed += bool(plaintext_files([runtime], values))
            send(child, sig, group)
            try:
                child.wait(timeout=HANG)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                result.fail(f"{signal.Signals(sig).name}: did not exit within {HANG} s")
            else:
                check_exit(result, sig, child.returncode)
            result.trials += 1
            if command == "up" and sig != signal.SIGKILL:
                left = plaintext_files([runtime], values)
                if left:
                    result.fail(f"{signal.Signals(sig).name}: plaintext left on exit in {left[:3]}")
                if running():
                    result.fail(f"{signal.Signals(sig).name}: containers left running on exit")
            if command == "watch":
                if sig != signal.SIGKILL and not running():
                    result.fail(f"{signal.Signals(sig).name}: stopping watch stopped the stack")
                continue  # the detached stack keeps its secrets until `down`
            down()
            left = plaintext_files([runtime, project], values)
            if left:
                result.fail(f"{signal.Signals(sig).name}: plaintext left after down in {left[:3]}")
    down()
    left = plaintext_files([runtime, project], values)
    if left:
        result.fail(f"plaintext left after the final down in {left[:3]}")
    result.notes.append(f"{exposed} of {result.trials} signals landed while secrets were on tmpfs")
    result.notes.append(f"{ignored} of {result.trials} started with the stop signals ignored")
    return result


# -- other local users (root, throwaway accounts) ------------------------------------------------


class Person:
    """A throwaway local user; `do` runs a function in a forked child that has become them
    (as tests/test_multi_user.py does: the interpreter and devsecrets are already loaded, so
    the user needs no access to them)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.uid = int(subprocess.run(["id", "-u", name], capture_output=True, text=True).stdout)
        self.gid = int(subprocess.run(["id", "-g", name], capture_output=True, text=True).stdout)

    def do(self, action: Any) -> dict[str, Any]:
        import json
        import traceback

        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            os.close(read)
            try:
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
                result: dict[str, Any] = {"value": action()}
            except DevsecretsError as e:
                result = {"error": type(e).__name__, "message": e.message, "hint": e.hint}
            except OSError as e:
                result = {"error": "OSError", "errno": e.errno}
            except BaseException:  # noqa: BLE001 - reported to the parent
                result = {"error": "crash", "message": traceback.format_exc()}
            os.write(write, json.dumps(result, default=str).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        return json.loads(data)


@contextlib.contextmanager
def throwaway_users(count: int) -> Any:
    tag = os.urandom(3).hex()
    names = [f"dsr{tag}{i}" for i in range(count)]
    try:
        for name in names:
            subprocess.run(
                ["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name],
                check=True,
                capture_output=True,
            )
        yield [Person(n) for n in names]
    finally:
        for name in names:
            subprocess.run(["userdel", name], check=False, capture_output=True)


def _users_skip(result: Result) -> bool:
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        result.notes.append("skipped: needs root and useradd (throwaway users)")
        return True
    # loaded before the fork: the other users cannot read this interpreter's files (a
    # Python under /root), so nothing may be imported after setuid
    from devsecrets import fdpath, runtime_dir  # noqa: F401

    return False


def _owned_dir(path: Path, person: Person, mode: int = 0o700) -> Path:
    path.mkdir(mode=mode)
    os.chmod(path, mode)
    os.chown(path, person.uid, person.gid)
    return path


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)


def _materialize(env: dict[str, str], warnings: list[str]) -> str:
    """As a user: the runtime root for `env`, a project dir in it holding the canary, checked
    by fstat; returns the root."""
    import stat as st

    from devsecrets import runtime_dir

    root = runtime_dir.private_root(env, warn=warnings.append)
    held = runtime_dir.hold(root / "shop")
    fd = runtime_dir.open_dir(root / "shop")
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or st.S_IMODE(info.st_mode) != 0o700:
            raise AssertionError(f"project dir owned by {info.st_uid}, mode {info.st_mode:o}")
        runtime_dir.write_file(fd, "db_password", MU_CANARY)
    finally:
        os.close(fd)
        held.release()
    return str(root)


MU_CANARY = f"{CANARY}multiuser-{os.urandom(3).hex()}".encode()


def _one_line_refusal(outcome: dict[str, Any]) -> bool:
    return outcome.get("error") not in (None, "crash") and "\n" not in outcome.get("message", "")


def squat_scenario(trials: int) -> Result:
    """Another user makes /dev/shm/devsecrets-<uid> first (a 0777 or 0700 directory, a
    symlink to their own directory, a file). The victim's commands must either use a private
    directory of their own (one warning naming the squatter; the same one found again) or
    refuse in one line; nothing may land in the squatter's reach."""
    result = Result(
        "users-squat",
        "another user squats the default runtime dir (0777/0700 dir, symlink, file)",
    )
    if _users_skip(result):
        return result
    kinds = ["dir 0777", "dir 0700", "symlink", "file"]
    outcomes = {"fallback": 0, "refused": 0}
    with throwaway_users(2) as (alice, mallory):
        default = Path(f"/dev/shm/devsecrets-{alice.uid}")  # noqa: S108
        tag = os.urandom(3).hex()
        cache = _owned_dir(Path(tempfile.gettempdir()) / f"dsrel-cache-{tag}", alice)
        loot = _owned_dir(Path(f"/dev/shm/dsrel-loot-{tag}"), mallory, 0o777)  # noqa: S108
        try:
            for trial in range(trials):
                kind = kinds[trial % len(kinds)]

                def squat(kind: str = kind) -> None:
                    if kind == "symlink":
                        os.symlink(loot, default)
                    elif kind == "file":
                        Path(default).write_bytes(b"")
                    else:
                        mode = 0o777 if kind == "dir 0777" else 0o700
                        os.mkdir(default, mode)
                        os.chmod(default, mode)

                if "error" in mallory.do(squat):
                    result.fail(f"{kind}: the squat itself failed")
                    continue

                def twice() -> list[Any]:
                    warnings: list[str] = []
                    env = {"XDG_CACHE_HOME": str(cache)}
                    first = _materialize(env, warnings)
                    second = _materialize(env, warnings)
                    return [first, second, warnings]

                outcome = alice.do(twice)
                result.trials += 1
                if "value" in outcome:
                    first, second, warnings = outcome["value"]
                    outcomes["fallback"] += 1
                    if first != second:
                        result.fail(f"{kind}: a second command did not find the fallback")
                    if Path(first) == default or Path(first).resolve().is_relative_to(loot):
                        result.fail(f"{kind}: used the squatted path")
                    if not warnings or mallory.name not in warnings[0]:
                        result.fail(f"{kind}: no line naming the squatter")
                    info = os.lstat(first)
                    if info.st_uid != alice.uid or stat.S_IMODE(info.st_mode) != 0o700:
                        result.fail(f"{kind}: fallback not a private directory of the user")
                    _remove(Path(first))
                elif _one_line_refusal(outcome):
                    outcomes["refused"] += 1
                    message = f"{outcome.get('message')} {outcome.get('hint')}"
                    if mallory.name not in message and "DEVSECRETS_RUNTIME_DIR" not in message:
                        result.fail(f"{kind}: refused without naming the squatter or a way out")
                else:
                    result.fail(f"{kind}: {outcome.get('error')}")
                if plaintext_files([loot, default], [MU_CANARY]) or any(loot.iterdir()):
                    result.fail(f"{kind}: something landed in the squatter's reach")
                _remove(default)
        finally:
            _remove(default)
            _remove(loot)
            _remove(cache)
    result.notes.append(
        f"{outcomes['fallback']} used a private fallback (one warning naming the squatter), "
        f"{outcomes['refused']} refused in one line"
    )
    return result


def read_scenario(trials: int) -> Result:
    """A user's runtime dir holds a value; another user tries to list it, read the file by its
    path, list the project dir, and claim the same root for themselves. Each attempt is a
    trial; any that succeeds is a failure."""
    result = Result("users-read", "another user reads or reuses a user's runtime dir")
    if _users_skip(result):
        return result
    from devsecrets import runtime_dir

    with throwaway_users(2) as (alice, mallory):
        given = Path(f"/dev/shm/dsrel-read-{os.urandom(3).hex()}")  # noqa: S108
        try:
            for _ in range(trials):
                made = alice.do(lambda: _materialize({"DEVSECRETS_RUNTIME_DIR": str(given)}, []))
                if "value" not in made:
                    result.fail(f"the user's own materialize failed: {made.get('error')}")
                    continue
                root = Path(made["value"])
                attempts = {
                    "list the root": lambda root=root: os.listdir(root),
                    "read the value": lambda root=root: (root / "shop/db_password").read_bytes(),
                    "list the project": lambda root=root: os.listdir(root / "shop"),
                    "claim the root": lambda: str(
                        runtime_dir.private_root({"DEVSECRETS_RUNTIME_DIR": str(given)})
                    ),
                }
                for what, attempt in attempts.items():
                    result.trials += 1
                    outcome = mallory.do(attempt)
                    if "value" in outcome or outcome.get("error") == "crash":
                        result.fail(f"{what}: {'succeeded' if 'value' in outcome else 'crashed'}")
                    if MU_CANARY.decode() in json_dump(outcome):
                        result.fail(f"{what}: the value reached the other user")
                _remove(given)
        finally:
            _remove(given)
    return result


def json_dump(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def swap_scenario(seconds: float) -> Result:
    """root makes its runtime dir under a path in sticky /dev/shm, writes a value and wipes it,
    again and again, while another user swaps a component of that path between absent and a
    symlink to their own directory as fast as they can. Each of root's attempts is a trial:
    it must work in a directory root owns (0700) or be refused in one line, and nothing may
    ever land in the other user's directory."""
    result = Result(
        "users-swap",
        "symlink swaps of a runtime-root component while root uses it (sticky /dev/shm)",
    )
    if _users_skip(result):
        return result
    from devsecrets import runtime_dir

    outcomes = {"used": 0, "refused": 0}
    with throwaway_users(1) as (mallory,):
        tag = os.urandom(3).hex()
        loot = _owned_dir(Path(f"/dev/shm/dsrel-loot-{tag}"), mallory, 0o777)  # noqa: S108
        race = Path(f"/dev/shm/dsrel-race-{tag}")  # noqa: S108
        deadline = time.time() + seconds
        swaps = 0

        def swap() -> int:
            count = 0
            while time.time() < deadline:
                try:
                    os.symlink(loot, race)
                    os.unlink(race)
                    count += 1
                except OSError:
                    time.sleep(0)
            return count

        read, write = os.pipe()
        attacker = os.fork()
        if attacker == 0:  # the child: reports mallory's swap count
            os.close(read)
            os.write(write, str(mallory.do(swap).get("value", -1)).encode())
            os._exit(0)
        os.close(write)
        try:
            while time.time() < deadline:
                result.trials += 1
                try:
                    root = runtime_dir.private_root({"DEVSECRETS_RUNTIME_DIR": str(race / "rt")})
                    held = runtime_dir.hold(root / "p")
                    fd = runtime_dir.open_dir(root / "p")
                    try:
                        info = os.fstat(fd)
                        if (info.st_uid, stat.S_IMODE(info.st_mode)) != (0, 0o700):
                            result.fail("used a directory root does not own privately")
                        runtime_dir.write_file(fd, "value", MU_CANARY)
                    finally:
                        os.close(fd)
                        held.release()
                    runtime_dir.wipe(root / "p")
                    outcomes["used"] += 1
                except DevsecretsError as e:
                    outcomes["refused"] += 1
                    if "\n" in e.message:
                        result.fail("a refusal of more than one line")
                except Exception as e:  # noqa: BLE001 - counted as a failure
                    result.fail(f"crash: {type(e).__name__}")
                with contextlib.suppress(FileNotFoundError):
                    info = os.lstat(race)
                    if stat.S_ISDIR(info.st_mode) and info.st_uid == 0:  # ours: race again
                        shutil.rmtree(race)
            with os.fdopen(read, "rb") as pipe:
                swaps = int(pipe.read() or b"-1")
        finally:
            os.waitpid(attacker, 0)
            if any(loot.rglob("*")):
                result.fail("something landed in the other user's directory")
            _remove(race)
            _remove(loot)
    result.notes.append(
        f"{outcomes['used']} used a root-owned 0700 dir, {outcomes['refused']} refused in one "
        f"line, against {swaps} swaps by the other user in {seconds:.0f} s"
    )
    return result


def sudo_e_scenario(trials: int) -> Result:
    """root with another user's XDG_RUNTIME_DIR (as `sudo -E` keeps it), where that user put a
    symlink to their own directory, a 0777 directory, or nothing at `devsecrets`: refused in
    one line naming the owner, nothing written there."""
    result = Result(
        "users-sudo-e", "root with another user's XDG_RUNTIME_DIR (`sudo -E`): symlink/dir/absent"
    )
    if _users_skip(result):
        return result
    from devsecrets import runtime_dir

    kinds = ["symlink", "dir 0777", "absent"]
    with throwaway_users(1) as (mallory,):
        tag = os.urandom(3).hex()
        xdg = _owned_dir(Path(f"/dev/shm/dsrel-xdg-{tag}"), mallory)  # noqa: S108
        loot = _owned_dir(Path(f"/dev/shm/dsrel-loot-{tag}"), mallory, 0o777)  # noqa: S108
        try:
            for trial in range(trials):
                kind = kinds[trial % len(kinds)]
                _remove(xdg / "devsecrets")
                if kind == "symlink":
                    mallory.do(lambda: os.symlink(loot, xdg / "devsecrets"))
                elif kind == "dir 0777":
                    mallory.do(lambda: os.mkdir(xdg / "devsecrets", 0o777))
                result.trials += 1
                try:
                    root = runtime_dir.private_root({"XDG_RUNTIME_DIR": str(xdg)})
                    result.fail(f"{kind}: used {root}")
                except DevsecretsError as e:
                    if "\n" in e.message or mallory.name not in e.message:
                        result.fail(f"{kind}: refusal not one line naming the owner")
                except Exception as e:  # noqa: BLE001 - counted as a failure
                    result.fail(f"{kind}: crash: {type(e).__name__}")
                if any(loot.rglob("*")) or any((xdg / "devsecrets").glob("*")):
                    result.fail(f"{kind}: something written in the other user's directories")
        finally:
            _remove(xdg)
            _remove(loot)
    return result


# -- report --------------------------------------------------------------------------------------


TITLE = """# Reliability figures

Written by `bench/reliability.py` (each section below is one run of it, rewritten as each
scenario finishes). Each scenario is described in the script's docstring. The target is zero
failures everywhere except where a failure is the point (the writers' lock disabled on purpose,
to show the concurrent-writer check catches it).
"""


def write_report(
    results: list[Result], out: Path, argv: list[str], seconds: float, *, done: bool = True
) -> None:
    """Replace this run's section of `out` (other runs' sections are kept), under a lock."""
    run_id = f"{os.getpid()}"
    lines = [
        f"<!-- run {run_id} -->",
        f"## `bench/reliability.py{(' ' + ' '.join(argv)) if argv else ''}`",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {seconds / 60:.0f} min, "
        f"{os.cpu_count()} cores shared with other work"
        + ("" if done else " (still running: the scenarios finished so far)")
        + ".",
        "",
        "| scenario | what | trials | failures | expected |",
        "|---|---|---:|---:|---|",
    ]
    for r in results:
        expected = "> 0 (shows the check catches it)" if r.expect_failures else "0"
        lines.append(f"| {r.name} | {r.what} | {r.trials} | {r.failures} | {expected} |")
    lines += ["", "Notes:", ""]
    for r in results:
        for note in r.notes:
            lines.append(f"- {r.name}: {note}")
    kills = sum(r.trials for r in results if r.name.startswith("kill-"))
    if kills:
        lines += ["", f"SIGKILL trials in this run: {kills}."]
    lines += [f"<!-- /run {run_id} -->", ""]
    section = "\n".join(lines)
    with open(Path(tempfile.gettempdir()) / "devsecrets-reliability.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = out.read_text() if out.exists() else TITLE
        text = _supersede(text, run_id, {r.name for r in results})
        begin, finish = f"<!-- run {run_id} -->", f"<!-- /run {run_id} -->\n"
        if begin in text:
            head, _, rest = text.partition(begin)
            text = head + section + rest.partition(finish)[2]
        else:
            text = text.rstrip("\n") + "\n\n" + section
        out.write_text(text)


def _supersede(text: str, run_id: str, names: set[str]) -> str:
    """Other runs' sections lose their rows and notes for the scenarios this run measured
    again; a section left with no scenario goes. So the file holds the latest figures of every
    scenario, each with the command line and date of the run that measured it."""
    pattern = re.compile(r"<!-- run (\S+) -->\n(.*?)<!-- /run \1 -->\n", re.S)

    def edit(match: re.Match[str]) -> str:
        if match.group(1) == run_id:
            return match.group(0)
        kept, rows = [], 0
        for line in match.group(2).split("\n"):
            row = re.match(r"\| (\S+) \|", line)
            note = re.match(r"- (\S+): ", line)
            name = (row or note).group(1) if (row or note) else None
            if name in names:
                continue
            rows += bool(row) and name != "scenario"
            kept.append(line)
        if not rows:
            return ""
        return (
            f"<!-- run {match.group(1)} -->\n"
            + "\n".join(kept)
            + f"<!-- /run {match.group(1)} -->\n"
        )

    text = pattern.sub(edit, text)
    return re.sub(r"\n{3,}", "\n\n", text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--out", type=Path, default=REPO / "RELIABILITY.md")
    parser.add_argument("--only", nargs="*", default=None, help="scenario name prefixes")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kill-trials", type=int, default=110, help="per command")
    parser.add_argument("--examples", type=int, default=2000, help="hypothesis, per property")
    parser.add_argument(
        "--signal-trials", type=int, default=10, help="per signal, for each of edit/up/watch"
    )
    parser.add_argument("--user-trials", type=int, default=40, help="per other-user scenario")
    parser.add_argument("--swap-seconds", type=float, default=10.0, help="the symlink-swap race")
    args = parser.parse_args()
    random.seed(args.seed)
    quick = args.quick
    kill_trials = 10 if quick else args.kill_trials
    image = os.environ.get("BENCH_IMAGE", "devsecrets-test-busybox")

    def wanted(name: str) -> bool:
        return args.only is None or any(name.startswith(o) for o in args.only)

    results: list[Result] = []
    started = time.monotonic()

    def report(results: list[Result]) -> None:
        print(_line(results[-1]), flush=True)
        write_report(results, args.out, sys.argv[1:], time.monotonic() - started, done=False)

    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        base = Path(tmp)
        editor = base / "editor.sh"
        editor.write_text('#!/bin/sh\nprintf %s "$1" > "$2"\n')
        editor.chmod(0o700)
        team = make_team(base / "kill", secrets=12)
        for command in ("set", "edit", "rm", "recipients rm", "rekey"):
            if wanted("kill-" + command.replace(" ", "-")):
                results.append(kill_scenario(team, command, kill_trials, editor))
                report(results)
        for lock in (True, False):
            if wanted("concurrent"):
                results.append(concurrent_scenario(base / f"conc-{lock}", 5 if quick else 30, lock))
                report(results)
        if wanted("bytes"):
            results.append(bytes_scenario(base / "bytes", quick))
            report(results)
        if wanted("hypothesis"):
            results.append(hypothesis_scenario(100 if quick else args.examples))
            report(results)
        if any(wanted(f"signals-{c}") for c in ("edit", "up", "watch")):
            sig_team = make_team(base / "signals", secrets=3, bob=False)
        for group in (False, True):
            if wanted(f"signals-edit{'-group' if group else ''}"):
                count = 2 if quick else args.signal_trials
                results.append(edit_signal_scenario(sig_team, count, editor, group=group))
                report(results)
        for command in ("up", "watch"):
            for group in (False, True):
                if wanted(f"signals-{command}{'-group' if group else ''}"):
                    count = 2 if quick else args.signal_trials
                    results.append(
                        stack_signal_scenario(sig_team, command, count, image, group=group)
                    )
                    report(results)
        users = 4 if quick else args.user_trials
        for name, scenario in (
            ("users-squat", lambda: squat_scenario(users)),
            ("users-read", lambda: read_scenario(max(users // 4, 1))),
            ("users-swap", lambda: swap_scenario(1.0 if quick else args.swap_seconds)),
            ("users-sudo-e", lambda: sudo_e_scenario(users)),
        ):
            if wanted(name):
                results.append(scenario())
                report(results)
        _cleanup_runtime(base)
    write_report(results, args.out, sys.argv[1:], time.monotonic() - started)
    bad = [r for r in results if (r.failures > 0) != r.expect_failures]
    verdict = "all as expected" if not bad else "UNEXPECTED: " + ", ".join(r.name for r in bad)
    print(f"wrote {args.out}; {verdict}")
    return 1 if bad else 0


def _line(r: Result) -> str:
    return f"{r.name:<22} trials {r.trials:>7}  failures {r.failures:>4}  {'; '.join(r.notes[:2])}"


def _cleanup_runtime(base: Path) -> None:
    for path in Path("/dev/shm").glob("reliability-*"):  # noqa: S108 - ours, by owner
        with contextlib.suppress(OSError):
            if path.stat().st_uid == os.getuid():
                shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

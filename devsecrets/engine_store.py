"""Engine mode: the secrets live on a tmpfs inside the Docker engine, fed through its API.

Input: the project name, `Layout`, values, the environment. Output: the engine-side directory
the override binds from, and `materialize.Written` as in host mode. Never prints.

Per project, a helper container (no network, no capabilities but CHOWN and FOWNER, read-only
root, never restarted) keeps one `local` volume of type tmpfs mounted. The volume holds the
same tree as the host mode's project directory (`services/<svc>/run-secrets/...`). Values go
in as a tar stream on the stdin of `docker exec -i helper sh -c 'tar -x ...'` into a staging
directory on that tmpfs, then each file is renamed into place: a reader sees the old or the
new bytes, never a mix. The tar headers carry the grant's uid/gid/mode, so ownership is exact
whoever the client is. Values are never in argv or in an environment variable, and never on
the engine's disk (not in an image, a container layer or a volume directory on disk).

The override binds `<volume mountpoint>/services/<svc>/run-secrets` (a directory inside the
volume, not the volume itself). When the tmpfs is gone (helper removed, engine or machine
restarted), that directory no longer exists, so a restart of the service fails with "no such
file or directory" instead of running without its secrets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import posixpath
import re
import secrets as _random
import select
import shlex
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from devsecrets import engine_api, engine_prestart, helper_run, materialize, runtime_dir
from devsecrets.engine_prestart import CLIENT, DEFAULT_IMAGE, IMAGE_ENV, LABEL, MOUNT, ROLE, SIZE
from devsecrets.errors import ComposeError, DevsecretsError, MaterializeError
from devsecrets.layout import Layout

STATE_KEY = "engine"
_TIMEOUT = 120
_PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]*")  # a compose project name


@dataclass(frozen=True, slots=True)
class EngineStore:
    project: str
    helper: str
    volume: str
    data_dir: PurePosixPath  # the volume's tmpfs, as the engine sees it
    fresh: bool  # made now: empty
    size: int = 0  # the tmpfs's size limit, fixed when it was made

    def record(self) -> dict[str, Any]:
        return {
            "helper": self.helper,
            "volume": self.volume,
            "data_dir": str(self.data_dir),
            "size": self.size,
        }


names = engine_prestart.names
client_id = engine_prestart.client_id


def image(flag: str | None, env: Mapping[str, str]) -> str:
    return flag or env.get(IMAGE_ENV) or DEFAULT_IMAGE


def _docker(
    env: Mapping[str, str], *args: str, stdin: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    try:
        out = subprocess.run(
            ["docker", *args], input=stdin, capture_output=True, env=dict(env), timeout=_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ComposeError(f"docker {args[0]}: {e}") from e
    if check and out.returncode != 0:
        detail = out.stderr.decode(errors="replace").strip().splitlines()
        raise ComposeError(
            f"engine mode: docker {args[0]} failed: {detail[-1] if detail else out.returncode}"
        )
    return out


@dataclass(frozen=True, slots=True)
class _Helper:
    running: bool
    size: int
    volume: str
    source: str


def _inspect(env: Mapping[str, str], helper: str) -> _Helper | None:
    """The project's helper as the engine has it (None: there is none)."""
    found = engine_api.container(helper, env)
    if found is None:
        return None
    try:
        running, labels = found["State"]["Running"], found["Config"]["Labels"]
        return _helper_from(running, labels, found["Mounts"])
    except (TypeError, KeyError):
        return _Helper(False, 0, "", "")  # not one we can use: replaced


def _helper_from(running: object, labels: Any, mounts: Any) -> _Helper:
    try:
        size = int((labels or {}).get(SIZE, "0"))
        mount = next(m for m in mounts or [] if m.get("Destination") == MOUNT)
        return _Helper(running is True, size, str(mount["Name"]), str(mount["Source"]))
    except (ValueError, TypeError, StopIteration, KeyError, AttributeError):
        return _Helper(False, 0, "", "")  # not one we can use: replaced


def ensure(
    project: str,
    env: Mapping[str, str],
    helper_image: str,
    *,
    needed: int,
    size: int,
    client: str,
    volume: str | None,
    hints: Path | None = None,
) -> EngineStore:
    """The project's running helper and its tmpfs volume; made (again) when missing, stopped,
    too small for `needed` bytes, or not the `volume` the client's state records.

    A stopped helper means its tmpfs is gone (engine or machine restart). A new volume gets a
    new name, so the override's bind paths change and compose recreates the services (a
    running container would otherwise keep the old, detached tmpfs and miss every update)."""
    helper, prefix = names(project)
    # no record: nothing of ours is known to be there, so no question asked first (a leftover
    # helper by that name is met as a name conflict below)
    found = _inspect(env, helper) if volume else None
    if (
        found is not None
        and found.running
        and found.size >= needed
        and found.volume == volume
        and found.source.startswith("/")
    ):
        return EngineStore(
            project, helper, found.volume, PurePosixPath(found.source), False, found.size
        )
    if found is not None:
        _remove_if_ours(env, project, helper)
    # the project's earlier volumes (or one a crash left), listed while the helper starts
    earlier = _Listing(env, project)
    began = None
    made = ""
    try:
        began = engine_prestart.take_helper(project, env)  # the head start, if any
        if began is not None:  # its `docker run` ends only if it failed
            if began.proc.poll() is None and began.size >= needed and found is None:
                made, size = began.volume, began.size
                _runs[helper] = _Run(began.spec, began.proc)
            else:
                engine_prestart.remove(began, env)
            began = None
        if not made:
            made = f"{prefix}-{_random.token_hex(4)}"
            spec = engine_prestart.helper_spec(project, made, size, client, helper_image)
            _runs[helper] = _Run(spec, helper_run.start(spec, env))
    except BaseException:
        if began is not None:  # taken, not yet ours or removed
            engine_prestart.remove(began, env)
        earlier.close()
        raise
    # removed once the new helper runs (`_drop_earlier`): a leftover helper by the same name
    # (a crash, a reboot that took the client's state) holds its volume until it is replaced
    _earlier[helper] = (earlier, made, env)
    # where the engine keeps the volume: guessed from the last one (the local driver's
    # <root>/volumes/<name>/_data) and checked by `confirm` once the first write answered
    # (the helper exists then)
    root = engine_prestart.volumes_root(hints, env) if hints is not None else None
    store = EngineStore(
        project, helper, made, PurePosixPath(root or "/", made, "_data"), True, size
    )
    if root is None:  # no guess: wait for the helper, then ask
        answer = _through_run(store, env, ":", b"")  # an empty message: answered once it runs
        if answer != "ok":
            raise ComposeError(f"engine mode: the helper {helper} did not start: {answer}")
        _drop_earlier(helper)
        return _confirmed(store, _inspect(env, helper), hints, env)
    _checks[helper] = (hints, env)
    return store


class _Listing:
    """The project's secrets volumes: asked now (`docker volume ls`, while the helper starts)
    or, through the API, when the result is wanted."""

    def __init__(self, env: Mapping[str, str], project: str) -> None:
        self.env, self.project = env, project
        self.socket = engine_api.socket_for(env)
        self.proc = None if self.socket else _start(env, "volume", "ls", "-q", *_filters(project))

    def result(self) -> list[str] | None:
        """The volumes' names; None when the engine did not say."""
        if self.socket is not None:
            found = _api_labelled(self.socket, "volumes", f"{LABEL}={self.project}")
            if found is not None:
                return [name for name, labels in found if labels.get(ROLE) == "secrets"]
            self.proc = _start(self.env, "volume", "ls", "-q", *_filters(self.project))
        assert self.proc is not None
        out = _finish(self.proc)
        return out.stdout.decode().split() if out.returncode == 0 else None

    def close(self) -> None:
        """Not wanted after all: the `docker volume ls` started, if any, is reaped."""
        if self.proc is not None:
            _finish(self.proc)


def _filters(project: str) -> tuple[str, ...]:
    return ("--filter", f"label={LABEL}={project}", "--filter", f"label={ROLE}=secrets")


def _api_labelled(socket: str, kind: str, label: str) -> list[tuple[str, dict[str, str]]] | None:
    """(name, labels) of the containers (`kind` "containers") or volumes with a label, asked
    through the API; None when it did not answer."""
    query = quote(json.dumps({"label": [label]}), safe="")
    containers = kind == "containers"
    path = f"/containers/json?all=1&filters={query}" if containers else f"/volumes?filters={query}"
    try:
        found: Any = engine_api.get_json(socket, path)
        items = found if containers else found["Volumes"] or []
        rows = []
        for item in items:
            name = item["Names"][0].lstrip("/") if containers else item["Name"]
            rows.append((str(name), dict(item.get("Labels") or {})))
    except (engine_api.ApiError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return rows


_earlier: dict[str, tuple[_Listing, str, Mapping[str, str]]] = {}


def _drop_earlier(helper: str) -> None:
    """Remove the volumes `ensure` found for the project, but the new one."""
    pending = _earlier.pop(helper, None)
    if pending is None:
        return
    listing, made, env = pending
    old = [v for v in listing.result() or [] if v != made]
    if old:
        _remove_volumes(env, old)


@dataclass(frozen=True, slots=True)
class _Run:
    """A helper's attached client (helper_run.start) before its write loop answered the
    first message."""

    spec: helper_run.HelperSpec
    proc: subprocess.Popen[bytes]


_runs: dict[str, _Run] = {}  # by helper name


def _through_run(store: EngineStore, env: Mapping[str, str], script: str, tar: bytes) -> str | None:
    """The first write into a helper being started, through its own loop: "ok" or the
    failure's last line; None when no run is pending for this helper. Once the loop answered
    "ok" it serves later writes of this process as a channel does. A leftover helper by the
    same name (a crash) is replaced once."""
    run = _runs.pop(store.helper, None)
    if run is None:
        return None
    answer, detail = _first_answer(run.proc, script, tar)
    if answer is None and "Conflict" in detail:
        _replace_leftover(env, store)
        run = _Run(run.spec, helper_run.start(run.spec, env))
        answer, detail = _first_answer(run.proc, script, tar)
    if answer is None:
        why = _docker_error(detail) or f"no answer in {_TIMEOUT} s"
        raise ComposeError(f"engine mode: the helper {store.helper} did not start: {why}")
    if answer == "ok":
        key = (store.helper, store.volume)
        _channels[key], _writes[key] = run.proc, 1
    else:
        engine_prestart.detach(run.proc)
    return answer


def _first_answer(proc: subprocess.Popen[bytes], script: str, tar: bytes) -> tuple[str | None, str]:
    """The loop's answer to a helper run's first message, or (None, the run's stderr) when
    the run ended or never answered (it failed; it is detached then)."""
    try:
        answer = _message(proc, script, tar)
    except BaseException:  # a stop signal: the client must not outlive us
        engine_prestart.detach(proc)
        raise
    if answer is not None:
        return answer, ""
    engine_prestart.detach(proc)
    return None, (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")


def _replace_leftover(env: Mapping[str, str], store: EngineStore) -> None:
    """Remove a container by the helper's name if it is a devsecrets helper of this project
    (left by a crash, or with the client's state lost); refuse to touch anyone else's."""
    _remove_if_ours(env, store.project, store.helper)


def _remove_if_ours(env: Mapping[str, str], project: str, helper: str) -> None:
    """`docker rm -f` the container by the helper's name if it is a devsecrets helper of this
    project; anyone else's is refused in one line and kept."""
    labels = engine_prestart.labels_of(helper, env)
    if labels.get(ROLE) != "helper" or labels.get(LABEL) != project:
        raise ComposeError(
            f"engine mode: a container named {helper} exists and is not this project's "
            "devsecrets helper",
            hint=f"rename or remove it (docker rm {helper}) if it is not needed",
        )
    _docker(env, "rm", "-f", helper, check=False)


def _docker_error(text: str) -> str:
    """The line of a docker CLI failure that says why: the daemon's answer, else the first
    line that is not a warning, a progress note or the usage hint."""
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    for line in lines:
        if "Error response from daemon" in line or line.startswith("docker: "):
            return line
    noise = ("WARNING", "Run 'docker", "Unable to find image")
    useful = [x for x in lines if not x.startswith(noise)]
    return useful[0] if useful else (lines[-1] if lines else "")


_checks: dict[str, tuple[Path | None, Mapping[str, str]]] = {}


def confirm(store: EngineStore) -> EngineStore:
    """`store` with the volume's real mountpoint, once the check `ensure` started has
    answered (the same store when it was not guessed, or guessed right). Called after the
    first write; the project's earlier volumes are removed here."""
    _drop_earlier(store.helper)
    check = _checks.pop(store.helper, None)
    if check is None:
        return store
    hints, env = check
    return _confirmed(store, _inspect(env, store.helper), hints, env)


def _confirmed(
    store: EngineStore, made: _Helper | None, hints: Path | None, env: Mapping[str, str]
) -> EngineStore:
    if made is None or made.volume != store.volume or not made.source.startswith("/"):
        raise ComposeError(f"engine mode: volume {store.volume} has no mountpoint")
    source = PurePosixPath(made.source)
    if hints is not None and source.name == "_data" and source.parent.name == store.volume:
        engine_prestart.remember_volumes_root(hints, env, str(source.parent.parent))
    if source == store.data_dir:
        return store
    return dataclasses.replace(store, data_dir=source)


def _start(env: Mapping[str, str], *args: str) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            ["docker", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
        )
    except OSError as e:
        raise ComposeError(f"docker {args[0]}: {e}") from e


def _finish(proc: subprocess.Popen[bytes]) -> subprocess.CompletedProcess[bytes]:
    try:
        out, err = proc.communicate(timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _project_volumes(env: Mapping[str, str], project: str) -> list[str]:
    return _Listing(env, project).result() or []


def _remove_volumes(env: Mapping[str, str], volumes: Sequence[str]) -> None:
    if not volumes:
        return
    gone = _docker(env, "volume", "rm", "-f", *volumes, check=False)
    if gone.returncode != 0 and b"no such volume" not in gone.stderr.lower():
        detail = gone.stderr.decode(errors="replace").strip().splitlines()
        raise ComposeError(
            f"engine mode: could not remove volume {volumes[0]}: {detail[-1] if detail else ''}"
        )


def remove(project: str, env: Mapping[str, str]) -> None:
    """Remove the project's helper, then its volumes (and with them every value)."""
    helper, _ = names(project)
    for key in [k for k in _channels if k[0] == helper]:
        _channel_close(key)
    run = _runs.pop(helper, None)
    if run is not None:
        engine_prestart.detach(run.proc)
    _docker(env, "rm", "-f", helper, check=False)
    _remove_volumes(env, _project_volumes(env, project))


def needed(values: Mapping[str, bytes], layout: Layout) -> int:
    """Bytes the tmpfs must hold while a write is under way: every file twice (the old one
    and the staged one), each rounded up to whole pages, and a page per file for the tree."""
    pages = sum(-(-len(values[f.store_name]) // 4096) + 1 for s in layout.services for f in s.files)
    return 2 * pages * 4096 + (1 << 20)


def volume_size(values: Mapping[str, bytes], layout: Layout) -> int:
    """The size limit a new volume gets: room to grow, with a floor; a limit, not an
    allocation (tmpfs takes memory only for what it holds)."""
    return max(16 << 20, 2 * needed(values, layout))


def materialize_into(
    store: EngineStore,
    layout: Layout,
    values: Mapping[str, bytes],
    env: Mapping[str, str],
    known: Mapping[str, str],
    key: bytes,
    previous: Sequence[str] = (),
) -> tuple[list[materialize.Written], dict[str, str], list[str]]:
    """Bring the volume to exactly `layout`. `known` holds keyed digests of what is there
    and `previous` the paths written last time (both from the client's private state);
    returns the new ones. Removes only files of `previous` that `layout` no longer has."""
    if store.size and needed(values, layout) > store.size:
        raise MaterializeError(
            f"engine mode: the secrets need {needed(values, layout) >> 20} MiB on the engine's "
            f"tmpfs, more than the {store.size >> 20} MiB its volume was made with; "
            "run `devsecrets up` again to make a bigger one (the services keep the last values)"
        )
    digests: dict[str, str] = {}
    written: list[materialize.Written] = []
    changed_files = []
    for service in layout.services:
        for mounted in service.files:
            value = values[mounted.store_name]
            grant = mounted.grant
            digest = hashlib.blake2b(
                f"{grant.uid}:{grant.gid}:{grant.mode:o}:".encode() + value, key=key
            ).hexdigest()
            digests[mounted.host_path] = digest
            changed = known.get(mounted.host_path) != digest
            if changed:
                changed_files.append(mounted)
            written.append(materialize.Written(mounted, changed))
    stage = f".staging/{_random.token_hex(8)}"
    archive, now = io.BytesIO(), time.time()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for mounted in changed_files:
            grant = mounted.grant
            info = tarfile.TarInfo(mounted.host_path)
            info.uid, info.gid, info.mode = int(grant.uid), int(grant.gid), grant.mode
            info.size, info.mtime = len(values[mounted.store_name]), now
            tar.addfile(info, io.BytesIO(values[mounted.store_name]))
    expected = [f.host_path for s in layout.services for f in s.files]
    expected += [f"{s.secrets_dir}/{r}" for s in layout.services for r in s.placeholders]
    q = shlex.quote
    lines = [
        "set -e", f"cd {MOUNT}", "umask 077",
        f"trap 'rm -rf {stage}' EXIT",  # a failed write leaves no half-staged files behind
    ]  # fmt: skip
    # what the layout no longer has goes first (a file may have become a directory); each
    # path is one we wrote, quoted whole: never split on a space or a newline in a name
    lines += [f"rm -f -- {q(path)}" for path in sorted(set(previous) - set(expected))]
    lines += [f"mkdir -p {stage}", f"{_EXTRACT} -C {stage}"]
    dirs: set[str] = set()
    for service in layout.services:
        dirs |= _parents(service.secrets_dir + "/x") if service.binds_secrets_dir else set()
        for mounted in service.files:
            dirs |= _parents(mounted.host_path)
        for relative in service.placeholders:
            dirs |= _parents(f"{service.secrets_dir}/{relative}")
    for directory in sorted(dirs, key=len):
        d = q(directory)  # made once (a test is a builtin: no process when it exists)
        lines.append(f"[ -d {d} ] || {{ mkdir -p -- {d} && chmod 0755 -- {d}; }}")
    for mounted in changed_files:
        lines.append(f"mv -f -- {q(stage + '/' + mounted.host_path)} {q(mounted.host_path)}")
    for service in layout.services:
        for relative in service.placeholders:
            path = q(f"{service.secrets_dir}/{relative}")
            lines.append(f"[ -e {path} ] || {{ : > {path} && chmod 0444 {path}; }}")
    if not layout.services:
        lines.append("rm -rf services")
    script = "\n".join(lines)
    data = archive.getvalue()
    answer = _through_run(store, env, script, data)  # a helper just started: its own loop
    if answer is None:
        answer = _channel_write(store, script, data)
    if answer is None:  # no channel open (or it broke): one `docker exec` for this write
        out = _docker(
            env, "exec", "-i", store.helper, "sh", "-c",
            script.replace(_EXTRACT, "tar -x -f -"), stdin=data, check=False,
        )  # fmt: skip
        text = out.stderr.decode(errors="replace")
        answer = "ok" if out.returncode == 0 else (text.strip().splitlines() or ["?"])[-1]
        if out.returncode == 0:
            _channel_open(store, env)
    if answer != "ok":
        if "No space left" in answer:
            answer = f"its {store.size >> 20} MiB tmpfs is full; run `devsecrets up` again"
        raise MaterializeError(f"engine mode: writing into helper {store.helper} failed: {answer}")
    return written, digests, sorted(expected)


# Live updates: after the first write of a process, the second one opens a channel, one
# `docker exec -i helper sh -c LOOP` kept running, and later writes go through it instead of
# a `docker exec` each (a process start and three API calls); a helper this process started
# serves as one already (its own first process is the loop). The message format and the loop:
# engine_prestart.LOOP. A broken channel is closed; that write goes by `docker exec`.
_EXTRACT, _LOOP = engine_prestart.EXTRACT, engine_prestart.LOOP
_channels: dict[tuple[str, str], subprocess.Popen[bytes] | None] = {}
_writes: dict[tuple[str, str], int] = {}


def _channel_open(store: EngineStore, env: Mapping[str, str]) -> None:
    key = (store.helper, store.volume)
    _writes[key] = _writes.get(key, 0) + 1
    if _writes[key] < 2 or key in _channels:  # a one-off `up -d` never opens one
        return
    try:
        _channels[key] = subprocess.Popen(
            ["docker", "exec", "-i", store.helper, "sh", "-c", _LOOP],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(env),
        )
    except OSError:
        _channels[key] = None  # not again for this helper


def _channel_write(store: EngineStore, script: str, tar: bytes) -> str | None:
    """The loop's answer ("ok" or the failure's last line), or None: no channel, or it broke
    before answering (then it is closed and not opened again for this helper)."""
    key = (store.helper, store.volume)
    proc = _channels.get(key)
    if proc is None:
        return None
    line = _message(proc, script, tar)
    if line == "ok":
        return "ok"
    _channel_close(key)
    _channels[key] = None
    return line


def _message(proc: subprocess.Popen[bytes], script: str, tar: bytes) -> str | None:
    """One message to a write loop: its answer, "ok" or the failure's last line; None when
    it did not answer within _TIMEOUT (it ended, broke, or the engine stalls)."""
    if proc.stdin is None or proc.stdout is None:
        return None
    body = script.encode()
    deadline = time.monotonic() + _TIMEOUT
    try:
        if not _send(proc.stdin.fileno(), f"{len(body)} {len(tar)}\n".encode() + body + tar,
                     deadline):  # fmt: skip
            return None
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
    except (OSError, ValueError):
        line = ""
    if line == "ok":
        return "ok"
    return line.removeprefix("fail ") if line.startswith("fail ") else None


def _send(fd: int, data: bytes, deadline: float) -> bool:
    """Write all of `data` to a pipe by `deadline` (a tar bigger than the pipe waits for the
    engine to take it: bounded, as `docker exec` was by its timeout)."""
    view = memoryview(data)
    os.set_blocking(fd, False)
    try:
        while view:
            _, ready, _ = select.select([], [fd], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return False
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue
    finally:
        os.set_blocking(fd, True)
    return True


def close_all() -> None:
    """Detach every helper run and channel this process holds (the end of a command): the
    helpers keep running, with what was written."""
    for key in list(_channels):
        _channel_close(key)
    while _runs:
        engine_prestart.detach(_runs.popitem()[1].proc)


def _channel_close(key: tuple[str, str]) -> None:
    proc = _channels.pop(key, None)
    if proc is not None:
        engine_prestart.detach(proc)  # a kept exec or a helper's own run: the same ending


def _parents(path: str) -> set[str]:
    parts = PurePosixPath(path).parts[:-1]
    return {posixpath.join(*parts[: i + 1]) for i in range(len(parts))}


def recorded(state: Mapping[str, Any]) -> dict[str, Any] | None:
    record = state.get(STATE_KEY)
    return record if isinstance(record, dict) else None


def forget(
    project_dir: Path, project: str, env: Mapping[str, str], *, orphans: bool = False
) -> None:
    """`down`, the end of a foreground `up`, stale cleanup: remove the helper and its volume
    when the project's state says the engine mode made them. With `orphans` (`down`), also
    when the state itself is gone (this machine restarted while a remote engine kept them):
    whatever the engine has for the project."""
    if recorded(runtime_dir.read_state(project_dir)) is not None:
        remove(project, env)
    elif orphans and not os.path.lexists(project_dir):
        if _labelled(env, "ps", "-a", f"{LABEL}={project}") or _labelled(
            env, "volume", "ls", f"{LABEL}={project}"
        ):
            remove(project, env)


def _labelled(env: Mapping[str, str], *what: str) -> list[tuple[str, str]]:
    """(name, project) of the containers (`ps -a`) or volumes (`volume ls`) with a label."""
    *command, label = what
    socket = engine_api.socket_for(env)
    if socket is not None:
        kind = "volumes" if command[0] == "volume" else "containers"
        found = _api_labelled(socket, kind, label)
        if found is not None:
            return [(name, labels[LABEL]) for name, labels in found if labels.get(LABEL)]
    name = "{{.Name}}" if command[0] == "volume" else "{{.Names}}"
    out = _docker(
        env, *command, "--filter", f"label={label}",
        "--format", f'{name}\t{{{{.Label "{LABEL}"}}}}', check=False,
    )  # fmt: skip
    if out.returncode != 0:
        return []
    rows = (line.split("\t") for line in out.stdout.decode().splitlines())
    return [(row[0], row[1]) for row in rows if len(row) == 2 and row[0] and row[1]]


def sweep(
    env: Mapping[str, str],
    root: Path,
    *,
    keep: str,
    in_use: Callable[[str], bool],
) -> list[str]:
    """Remove helpers and volumes this client made (its id, see `client_id`) for projects
    whose runtime directory in `root` is gone, once `in_use` says no container of the
    project is left. Returns the projects swept. Another client's are never touched."""
    client = f"{CLIENT}={client_id(root)}"
    projects = {p for _, p in _labelled(env, "ps", "-a", client)}
    projects |= {p for _, p in _labelled(env, "volume", "ls", client)}
    swept = []
    for project in sorted(projects - {keep}):
        if not _PROJECT.fullmatch(project) or os.path.lexists(root / project) or in_use(project):
            continue
        try:
            remove(project, env)
        except DevsecretsError:
            continue  # kept for a later run
        swept.append(project)
    return swept


def write(
    project_dir: Path,
    store: EngineStore,
    layout: Layout,
    values: Mapping[str, bytes],
    env: Mapping[str, str],
) -> list[materialize.Written]:
    """Write into the engine and remember (in the client's private state) where and what."""
    record = recorded(runtime_dir.read_state(project_dir)) or {}
    key_hex = record.get("key")
    key = bytes.fromhex(key_hex) if isinstance(key_hex, str) else _random.token_bytes(32)
    same = record.get("volume") == store.volume
    known = record.get("digests") if same and isinstance(record.get("digests"), dict) else {}
    paths = record.get("paths")
    previous = [p for p in paths if isinstance(p, str)] if same and isinstance(paths, list) else []
    written, digests, expected = materialize_into(
        store, layout, values, env, known or {}, key, previous
    )
    runtime_dir.update_state(
        project_dir,
        **{STATE_KEY: {**store.record(), "key": key.hex(), "digests": digests, "paths": expected}},
    )
    return written


def materialize_for(
    project_dir: Path,
    engine: EngineStore | None,
    layout: Layout,
    values: Mapping[str, bytes],
    env: Mapping[str, str],
) -> list[materialize.Written]:
    """Write `values` as `layout` says: into `project_dir` (host mode) or the engine."""
    if engine is None:
        return materialize.materialize(project_dir, layout, values)
    materialize.materialize_build(project_dir, layout, values)  # compose reads them here
    return write(project_dir, engine, layout, values, env)

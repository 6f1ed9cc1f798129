"""Engine mode's head start: the mode probe, and the helper when engine mode is likely.

`configcache.prestart` calls `start_probe_for` and `start_helper` first thing for `up` and
`render`, before the CLI, the store and the crypto libraries are imported (bench/bench_up.py:
the helper's `docker run` is the largest cost engine mode adds to `up`). Two things may start:

- The probe (`engine_mode`): `docker create` binding a fresh directory of the runtime root,
  unless a mode is forced. `engine_mode.start` takes it over when the root and the
  environment are the same; otherwise it is killed and its directory removed (`discard`).
  Its answer also tells whether an engine answers at all, so the separate engine check
  (`docker version`) runs only when a mode is forced.
- The helper (`engine_store.ensure`), when engine mode is forced or was the last probe's
  answer for this engine (`ANSWERS`, in the runtime root), the compose project's name is
  known (from the cached `compose config`) and the project has no runtime directory yet.
  `ensure` takes it over if it fits; otherwise it is removed with its (empty) volume, and so
  is one nobody took (host mode after all, or the command failed first) when the command
  ends (`discard`).
Nothing here holds a value: the helper's tmpfs is empty until `engine_store` writes to it.
Imports only the standard library (it runs before everything else).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets as _random
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devsecrets import engine_api, helper_run
from devsecrets.helper_run import HelperSpec

ANSWERS = ".engine-mode.json"  # in the runtime root: {engine key: "host" | "engine"}
LABEL = "devsecrets.project"
ROLE = "devsecrets.role"
CLIENT = "devsecrets.client"
SIZE = "devsecrets.size"
MOUNT = "/devsecrets"  # where the helper sees the volume
DEFAULT_IMAGE = "busybox:stable"
IMAGE_ENV = "DEVSECRETS_HELPER_IMAGE"
MODE_ENV = "DEVSECRETS_ENGINE_MODE"
MIN_SIZE = 16 << 20


def client_id(root: Path) -> str:
    """Who made a helper: this machine, user and runtime root. The stale sweep touches only
    helpers and volumes with our id, whose runtime directory here is gone."""
    # the host name as gethostname() gives it, without importing socket (~10 ms, and the
    # helper's head start waits for this)
    who = f"{os.uname().nodename}\0{os.getuid()}\0{root}".encode()
    return hashlib.sha256(who).hexdigest()[:16]


def names(project: str) -> tuple[str, str]:
    """The helper's name, and the prefix of its volume's (each volume gets a random suffix)."""
    return f"devsecrets-{project}-helper", f"devsecrets-{project}-secrets"


# The write loop the helper runs (engine_store): a message is a header line "<script bytes>
# <tar bytes>", the script (paths only), the tar. The loop reads each part with `dd
# iflag=fullblock` (exactly that many bytes), runs the script, answers "ok" or "fail <last
# line>"; after a failure it stops reading, so bytes left of a message are never taken for a
# header or a script. It ends at the end of its input.
EXTRACT = 'dd bs="$tlen" count=1 iflag=fullblock 2>/dev/null | tar -x -f -'
LOOP = """
while read -r slen tlen; do
  script=$(dd bs="$slen" count=1 iflag=fullblock 2>/dev/null) || exit 1
  [ "${#script}" -gt 0 ] || exit 1
  out=$(eval "$script" 2>&1)
  if [ $? -eq 0 ]; then echo ok; else printf 'fail %s\\n' "$(echo "$out" | tail -n 1)"; exit 1; fi
done
"""


def helper_spec(project: str, volume: str, size: int, client: str, image: str) -> HelperSpec:
    """The project's helper, which also creates its tmpfs volume (helper_run makes it).

    Its first process is the write loop on the attached client's stdin, so the first values
    go in without a `docker exec` (~120 ms) once it has started; at the end of that input it
    sleeps. The client then detaches (ending it leaves the helper running)."""
    helper, _ = names(project)
    return HelperSpec(
        name=helper,
        image=image,
        labels={LABEL: project, CLIENT: client, ROLE: "helper", SIZE: str(size)},
        volume=volume,
        volume_labels={LABEL: project, ROLE: "secrets", CLIENT: client},
        tmpfs_options=f"size={size},mode=0755,uid=0,gid=0",
        target=MOUNT,
        command=("-c", 'sh -c "$1"; exec sleep 2147483647', "helper", LOOP),
    )


def engine_key(env: Mapping[str, str]) -> str:
    """Which engine the docker CLI talks to, as far as the environment says."""
    if env.get("DOCKER_HOST"):
        return f"host:{env['DOCKER_HOST']}"
    if env.get("DOCKER_CONTEXT"):
        return f"context:{env['DOCKER_CONTEXT']}"
    config = Path(env.get("DOCKER_CONFIG") or Path(env.get("HOME", "/")) / ".docker")
    try:
        current = json.loads((config / "config.json").read_text()).get("currentContext")
    except (OSError, ValueError, AttributeError):
        current = None
    return f"context:{current or 'default'}"


def _env_key(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(env.items()))


@dataclass
class Probe:
    root: Path
    env: tuple[tuple[str, str], ...]
    marker: Path
    proc: subprocess.Popen[bytes]


@dataclass
class Helper:
    root: Path
    env: tuple[tuple[str, str], ...]
    project: str
    volume: str
    size: int
    spec: HelperSpec
    proc: subprocess.Popen[bytes]  # the attached client (helper_run.start)


_probe: Probe | None = None
_helper: Helper | None = None


def start_probe(root: Path, env: Mapping[str, str]) -> tuple[Path, subprocess.Popen[bytes]]:
    """The probe (see engine_mode): a fresh directory in `root` and `docker create` binding it."""
    marker = root / f".probe-{_random.token_hex(8)}"
    os.mkdir(marker, 0o700)
    try:
        proc = subprocess.Popen(
            [
                "docker", "create", "--pull", "never", "--network", "none",
                "--mount", f"type=bind,source={marker},target=/devsecrets-probe,readonly",
                f"devsecrets-probe-{_random.token_hex(8)}:absent",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
        )  # fmt: skip
    except OSError:
        os.rmdir(marker)
        raise
    return marker, proc


def _flag(args: Sequence[str], name: str) -> str | None:
    value = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def _mode(args: Sequence[str], env: Mapping[str, str]) -> str:
    return _flag(args, "--engine-mode") or env.get(MODE_ENV) or "auto"


def start_probe_for(args: Sequence[str], env: Mapping[str, str], root: Path) -> bool:
    """Start the probe unless a mode is forced. Whether it runs: it also tells whether an
    engine answers, so the separate engine check is not needed then. Never raises."""
    global _probe
    try:
        if _mode(args, env) != "auto":
            return False
        marker, proc = start_probe(root, env)
    except Exception:  # noqa: BLE001 - only a head start: the command probes itself
        return False
    _probe = Probe(root, _env_key(env), marker, proc)
    return True


def start_helper(
    args: Sequence[str], env: Mapping[str, str], root: Path, config: bytes | None
) -> None:
    """Start the helper when engine mode is likely (see the module doc). `config` is the
    cached `compose config` output, if any. Never raises."""
    global _helper
    with contextlib.suppress(Exception):
        mode = _mode(args, env)
        likely = mode == "engine" or (
            mode == "auto" and remembered(root).get(engine_key(env)) == "engine"
        )
        if not likely:
            return
        name = json.loads(config).get("name") if config else None
        if not isinstance(name, str) or not name or os.path.lexists(root / name):
            return
        image = _flag(args, "--helper-image") or env.get(IMAGE_ENV) or DEFAULT_IMAGE
        volume = f"{names(name)[1]}-{_random.token_hex(4)}"
        spec = helper_spec(name, volume, MIN_SIZE, client_id(root), image)
        _helper = Helper(
            root, _env_key(env), name, volume, MIN_SIZE, spec, helper_run.start(spec, env)
        )


def take_probe(root: Path, env: Mapping[str, str]) -> tuple[Path, subprocess.Popen[bytes]] | None:
    """The prestarted probe, if it was started for this root and environment."""
    global _probe
    probe, _probe = _probe, None
    if probe is None:
        return None
    if probe.root == root and probe.env == _env_key(env):
        return probe.marker, probe.proc
    _end_probe(probe)
    return None


def take_helper(project: str, env: Mapping[str, str]) -> Helper | None:
    """The prestarted helper, if it was started for this project and environment; its
    `docker run` may still be starting it. The caller owns it (and removes it if it does not
    fit)."""
    global _helper
    helper, _helper = _helper, None
    if helper is None:
        return None
    if helper.project == project and helper.env == _env_key(env):
        return helper
    remove(helper, env)
    return None


def drop(env: Mapping[str, str]) -> None:
    """Remove a prestarted helper nobody took, and its empty volume."""
    global _helper
    helper, _helper = _helper, None
    if helper is not None:
        remove(helper, env)


def detach(proc: subprocess.Popen[bytes]) -> None:
    """End a helper's attached `docker run` (or a `docker exec`): the end of its input ends
    the write loop; the process is then stopped, which leaves the helper running."""
    with contextlib.suppress(OSError, ValueError):
        if proc.stdin is not None:
            proc.stdin.close()
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def remove(helper: Helper, env: Mapping[str, str]) -> None:
    """Remove a head start nobody took: the container by the helper's name only if it is this
    project's helper (its start may have failed on a name someone else's container holds),
    and the volume made for it (a random name)."""
    detach(helper.proc)
    name, _ = names(helper.project)
    argvs = [["volume", "rm", "-f", helper.volume]]
    labels = labels_of(name, env)
    if labels.get(ROLE) == "helper" and labels.get(LABEL) == helper.project:
        argvs.insert(0, ["rm", "-f", name])
    for argv in argvs:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["docker", *argv], capture_output=True, env=dict(env), timeout=120)


def labels_of(container: str, env: Mapping[str, str]) -> dict[str, str]:
    """A container's labels ({} when there is none by that name, or no clear answer)."""
    config = (engine_api.container(container, env) or {}).get("Config")
    labels = config.get("Labels") if isinstance(config, dict) else None
    return labels if isinstance(labels, dict) else {}


def _end_probe(probe: Probe) -> None:
    if probe.proc.poll() is None:
        probe.proc.kill()
    probe.proc.wait()
    with contextlib.suppress(OSError):
        os.rmdir(probe.marker)


def discard() -> None:
    """What nobody took (the command failed before, or differed): stopped and removed."""
    global _probe
    probe, _probe = _probe, None
    if probe is not None:
        _end_probe(probe)
    if _helper is not None:
        drop(dict(_helper.env))


def remembered(root: Path) -> dict[str, str]:
    try:  # a hint only: a wrong one costs time, not safety
        fd = os.open(root / ANSWERS, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            answers = json.loads(os.read(fd, 65536))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return {}
    return answers if isinstance(answers, dict) else {}


def volumes_root(root: Path, env: Mapping[str, str]) -> str | None:
    """Where this engine keeps its volumes, as the last helper's mountpoint showed."""
    found = remembered(root).get(f"volumes {engine_key(env)}")
    return found if isinstance(found, str) and found.startswith("/") else None


def remember_volumes_root(root: Path, env: Mapping[str, str], path: str) -> None:
    _remember(root, f"volumes {engine_key(env)}", path)


def remember(root: Path, env: Mapping[str, str], mode: str) -> None:
    """Keep the probe's answer for this engine, for the next run's head start."""
    _remember(root, engine_key(env), mode)


def _remember(root: Path, key: str, value: str) -> None:
    answers = remembered(root)
    if answers.get(key) == value:
        return
    answers = {**dict(list(answers.items())[-15:]), key: value}
    with contextlib.suppress(Exception):
        from devsecrets import fdpath, runtime_dir

        fd = runtime_dir.open_owned(root)
        try:
            fdpath.write_file(fd, ANSWERS, json.dumps(answers).encode())
        finally:
            os.close(fd)

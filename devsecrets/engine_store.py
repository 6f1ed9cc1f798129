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

import hashlib
import io
import posixpath
import secrets as _random
import shlex
import subprocess
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from devsecrets import materialize, runtime_dir
from devsecrets.errors import ComposeError, MaterializeError
from devsecrets.layout import Layout

DEFAULT_IMAGE = "busybox:stable"
IMAGE_ENV = "DEVSECRETS_HELPER_IMAGE"
LABEL = "devsecrets.project"
ROLE = "devsecrets.role"
MOUNT = "/devsecrets"  # where the helper sees the volume
STATE_KEY = "engine"
_TIMEOUT = 120


@dataclass(frozen=True, slots=True)
class EngineStore:
    project: str
    helper: str
    volume: str
    data_dir: PurePosixPath  # the volume's tmpfs, as the engine sees it
    fresh: bool  # made now: empty

    def record(self) -> dict[str, Any]:
        return {"helper": self.helper, "volume": self.volume, "data_dir": str(self.data_dir)}


def names(project: str) -> tuple[str, str]:
    return f"devsecrets-{project}-helper", f"devsecrets-{project}-secrets"


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


def ensure(project: str, env: Mapping[str, str], helper_image: str, size: int) -> EngineStore:
    """The project's running helper and its tmpfs volume; made (again) when missing or stopped.

    A stopped helper means its tmpfs is gone (engine or machine restart): both are replaced."""
    helper, volume = names(project)
    out = _docker(
        env,
        "inspect", "--type", "container", "--format", "{{.State.Running}}",
        helper, check=False,
    )  # fmt: skip
    running = out.returncode == 0 and out.stdout.strip() == b"true"
    if running:
        mountpoint = _mountpoint(env, volume)
        if mountpoint is not None:
            return EngineStore(project, helper, volume, mountpoint, fresh=False)
    remove(project, env)
    labels = ["--label", f"{LABEL}={project}"]
    _docker(
        env,
        "volume", "create", "--driver", "local",
        "--opt", "type=tmpfs", "--opt", "device=tmpfs",
        "--opt", f"o=size={size},mode=0755,uid=0,gid=0",
        *labels, "--label", f"{ROLE}=secrets", volume,
    )  # fmt: skip
    _docker(
        env,
        "run", "-d", "--name", helper, *labels, "--label", f"{ROLE}=helper",
        "--network", "none", "--cap-drop", "ALL", "--cap-add", "CHOWN", "--cap-add", "FOWNER",
        "--read-only", "--security-opt", "no-new-privileges", "--restart", "no",
        "--log-driver", "none", "--user", "0:0",
        "--mount", f"type=volume,source={volume},target={MOUNT}",
        "--entrypoint", "sleep", helper_image, "2147483647",
    )  # fmt: skip
    mountpoint = _mountpoint(env, volume)
    if mountpoint is None:
        raise ComposeError(f"engine mode: volume {volume} has no mountpoint")
    return EngineStore(project, helper, volume, mountpoint, fresh=True)


def _mountpoint(env: Mapping[str, str], volume: str) -> PurePosixPath | None:
    out = _docker(env, "volume", "inspect", "--format", "{{.Mountpoint}}", volume, check=False)
    text = out.stdout.decode().strip()
    return PurePosixPath(text) if out.returncode == 0 and text.startswith("/") else None


def remove(project: str, env: Mapping[str, str]) -> None:
    """Remove the project's helper, then its volume (and with it every value)."""
    helper, volume = names(project)
    _docker(env, "rm", "-f", helper, check=False)
    out = _docker(env, "volume", "rm", "-f", volume, check=False)
    if out.returncode != 0 and b"no such volume" not in out.stderr.lower():
        detail = out.stderr.decode(errors="replace").strip()
        raise ComposeError(f"engine mode: could not remove volume {volume}: {detail}")


def volume_size(values: Mapping[str, bytes], layout: Layout) -> int:
    """Room for every file twice (old and staged), with a floor; a limit, not an allocation."""
    total = sum(len(values[f.store_name]) for s in layout.services for f in s.files)
    return max(16 << 20, 4 * total)


def materialize_into(
    store: EngineStore,
    layout: Layout,
    values: Mapping[str, bytes],
    env: Mapping[str, str],
    known: Mapping[str, str],
    key: bytes,
) -> tuple[list[materialize.Written], dict[str, str]]:
    """Bring the volume to exactly `layout`. `known` holds keyed digests of what is there
    (from the last write, in the client's private state); returns the new ones."""
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
    q = shlex.quote
    lines = ["set -e", f"cd {MOUNT}", "umask 077", f"mkdir -p {stage}", f"tar -x -f - -C {stage}"]
    dirs: set[str] = set()
    for service in layout.services:
        dirs |= _parents(service.secrets_dir + "/x") if service.binds_secrets_dir else set()
        for mounted in service.files:
            dirs |= _parents(mounted.host_path)
        for relative in service.placeholders:
            dirs |= _parents(f"{service.secrets_dir}/{relative}")
    for directory in sorted(dirs, key=len):
        lines.append(f"mkdir -p {q(directory)} && chmod 0755 {q(directory)}")
    for mounted in changed_files:
        lines.append(f"mv -f {q(stage + '/' + mounted.host_path)} {q(mounted.host_path)}")
    expected = [f.host_path for s in layout.services for f in s.files]
    for service in layout.services:
        for relative in service.placeholders:
            path = q(f"{service.secrets_dir}/{relative}")
            expected.append(f"{service.secrets_dir}/{relative}")
            lines.append(f"[ -e {path} ] || {{ : > {path} && chmod 0444 {path}; }}")
    lines.append(f"rm -rf {stage}")
    # what the layout no longer has goes (paths of files we wrote; never values)
    keep = " ".join(q(p) for p in sorted(expected))
    lines.append(
        f'for f in $(find services -type f 2>/dev/null); do case " {keep} " in '
        '*" $f "*) ;; *) rm -f "$f" ;; esac; done'
    )
    if not layout.services:
        lines.append("rm -rf services")
    script = "\n".join(lines)
    out = _docker(
        env, "exec", "-i", store.helper, "sh", "-c", script,
        stdin=archive.getvalue(), check=False,
    )  # fmt: skip
    if out.returncode != 0:
        detail = out.stderr.decode(errors="replace").strip().splitlines()
        raise MaterializeError(
            f"engine mode: writing into helper {store.helper} failed: "
            f"{detail[-1] if detail else out.returncode}"
        )
    return written, digests


def _parents(path: str) -> set[str]:
    parts = PurePosixPath(path).parts[:-1]
    return {posixpath.join(*parts[: i + 1]) for i in range(len(parts))}


def bind_root(store: EngineStore) -> Path:
    return Path(str(store.data_dir))


def recorded(state: Mapping[str, Any]) -> dict[str, Any] | None:
    record = state.get(STATE_KEY)
    return record if isinstance(record, dict) else None


def forget(project_dir: Path, project: str, env: Mapping[str, str]) -> None:
    """`down`, the end of a foreground `up`, stale cleanup: remove the helper and its volume
    when the project's state says the engine mode made them."""
    if recorded(runtime_dir.read_state(project_dir)) is not None:
        remove(project, env)


def projects_with_helpers(env: Mapping[str, str]) -> Sequence[str]:
    out = _docker(
        env, "ps", "-a", "--filter", f"label={ROLE}=helper",
        "--format", f'{{{{.Label "{LABEL}"}}}}', check=False,
    )  # fmt: skip
    return [line for line in out.stdout.decode().split() if line] if out.returncode == 0 else []


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
    known = record.get("digests") if isinstance(record.get("digests"), dict) else {}
    written, digests = materialize_into(store, layout, values, env, known or {}, key)
    runtime_dir.update_state(
        project_dir, **{STATE_KEY: {**store.record(), "key": key.hex(), "digests": digests}}
    )
    return written


def forget_digests(project_dir: Path) -> None:
    """A new, empty volume: nothing recorded is there any more."""
    record = recorded(runtime_dir.read_state(project_dir))
    if record is not None:
        runtime_dir.update_state(project_dir, **{STATE_KEY: {**record, "digests": {}}})


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
    return write(project_dir, engine, layout, values, env)

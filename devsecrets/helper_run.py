"""How engine mode's helper container is made and started, attached to its write loop.

Two ways, one container (tests/test_engine_store.py compares them):
- Where the docker CLI reaches the engine by a unix socket (`DOCKER_HOST=unix://…`, or the
  current context's endpoint, or the default socket), the container is created through the
  Engine API on that socket with `NetworkDisabled`, then started attached by `docker start
  -a -i`. A network-disabled container gets an empty network namespace from the runtime;
  `--network none` has the engine build one through libnetwork (a hook that runs the
  daemon's binary again), which costs ~150 ms of the helper's start (bench/bench_up.py).
- Anything else (ssh://, tcp://, a context with TLS, an image to pull, a name already in
  use, any answer but "created"): `docker run -i --network none`, which pulls, and says in
  its own words what went wrong.
Either way the values go in later, on the attached client's stdin (engine_store); nothing
here holds one. Imports only the standard library: the head start (engine_prestart) uses it
before anything else is loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from devsecrets import engine_api

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True, slots=True)
class HelperSpec:
    """Everything the helper is made from, for either way of making it."""

    name: str
    image: str
    labels: Mapping[str, str]
    volume: str
    volume_labels: Mapping[str, str]
    tmpfs_options: str  # the tmpfs's mount options: size, mode, owner
    target: str  # where the helper sees its volume
    command: tuple[str, ...]  # after the entrypoint `sh`

    def run_argv(self) -> list[str]:
        """`docker run`, attached (`-i`); `--sig-proxy=false`: ending the client leaves the
        helper running."""
        labels = [x for k, v in self.labels.items() for x in ("--label", f"{k}={v}")]
        mount = ",".join(
            [
                "type=volume", f"source={self.volume}", f"target={self.target}",
                "volume-driver=local",
                *(f"volume-label={k}={v}" for k, v in self.volume_labels.items()),
                "volume-opt=type=tmpfs", "volume-opt=device=tmpfs",
                f'"volume-opt=o={self.tmpfs_options}"',
            ]
        )  # fmt: skip
        return [
            "docker", "run", "-i", "--sig-proxy=false", "--name", self.name, *labels,
            "--network", "none", *_CONFINED, "--mount", mount,
            "--entrypoint", "sh", self.image, *self.command,
        ]  # fmt: skip

    def create_body(self) -> bytes:
        """The Engine API's container create request for the same container, with its
        network disabled instead of `none` (see the module doc)."""
        return json.dumps(
            {
                "Image": self.image,
                "Entrypoint": ["sh"],
                "Cmd": list(self.command),
                "Labels": dict(self.labels),
                "User": "0:0",
                # as `docker run -i` asks: stdin open, closed when the client detaches
                "AttachStdin": True,
                "AttachStdout": True,
                "AttachStderr": True,
                "OpenStdin": True,
                "StdinOnce": True,
                "NetworkDisabled": True,
                "HostConfig": {
                    "NetworkMode": "none",
                    "CapDrop": ["ALL"],
                    "CapAdd": ["CAP_CHOWN", "CAP_FOWNER"],  # as the CLI spells them
                    "ReadonlyRootfs": True,
                    "SecurityOpt": ["no-new-privileges"],
                    "RestartPolicy": {"Name": "no"},
                    "LogConfig": {"Type": "none", "Config": {}},
                    "Mounts": [
                        {
                            "Type": "volume",
                            "Source": self.volume,
                            "Target": self.target,
                            "VolumeOptions": {
                                "Labels": dict(self.volume_labels),
                                "DriverConfig": {
                                    "Name": "local",
                                    "Options": {
                                        "type": "tmpfs",
                                        "device": "tmpfs",
                                        "o": self.tmpfs_options,
                                    },
                                },
                            },
                        }
                    ],
                },
            }
        ).encode()


# the same for both ways (create_body spells them for the API)
_CONFINED = (
    "--cap-drop", "ALL", "--cap-add", "CHOWN", "--cap-add", "FOWNER",
    "--read-only", "--security-opt", "no-new-privileges", "--restart", "no",
    "--log-driver", "none", "--user", "0:0",
)  # fmt: skip


def start(spec: HelperSpec, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """The helper, started; the returned client is attached to its stdin and stdout (its
    first process reads stdin). Created through the API where it can be (see the module
    doc), else by `docker run`."""
    socket_path = engine_api.socket_for(env)
    if socket_path is not None and create(socket_path, spec):
        # its own session: a Ctrl-C meant for us is not passed on to the helper
        return attach(["docker", "start", "-a", "-i", spec.name], env, new_session=True)
    return attach(spec.run_argv(), env, new_session=False)


def attach(
    argv: list[str], env: Mapping[str, str], *, new_session: bool
) -> subprocess.Popen[bytes]:
    """A docker client attached to a helper: its stdin and stdout are the write loop's. It
    dies with this process (Linux: PR_SET_PDEATHSIG), so an end that skips our cleanup
    (SIGKILL, a stop signal before the plaintext guard) leaves no attached client behind."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        start_new_session=new_session,
        preexec_fn=_die_with_parent(),  # noqa: PLW1509 - two syscalls, resolved before the fork
    )


def _die_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec: SIGKILL when this process ends. Resolved here, so the
    child imports nothing (another thread may hold the import lock at the fork)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, ImportError):  # not Linux: best effort
        return None
    parent = os.getpid()

    def child() -> None:
        prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0)  # SIGKILL
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)

    return child


def create(socket_path: str, spec: HelperSpec) -> bool:
    """Create the helper through the Engine API: whether the engine answered "201 Created".
    Anything else (no image, a name in use, an old engine, no answer) is left to `docker run`,
    which handles it and explains it."""
    path = f"/containers/create?name={spec.name}"  # [a-z0-9_-]: nothing to quote
    try:
        status, _ = engine_api.call(socket_path, "POST", path, spec.create_body())
    except engine_api.ApiError:
        return False
    return status == 201

"""Where the secrets live: on this machine's tmpfs (host mode) or on a tmpfs inside the engine.

Input: the environment, the runtime root, an optional forced mode. Output: `EngineChoice`
(the mode and a one-line reason). Host mode needs an engine that sees the client's files
(rootful or rootless Docker on this machine). Docker Desktop, Colima, a remote host or an
engine in another mount namespace does not: there the secrets go to `engine_store`.

The probe asks the engine to create a container that bind-mounts a uniquely named directory
we just made in the runtime root, from an image that does not exist. The engine checks the
bind source before it looks for the image, so the answer is either "bind source path does not
exist" (it cannot see our files) or "No such image" (it can); nothing is created or pulled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devsecrets import compose, engine_prestart
from devsecrets.errors import UsageProblem

HOST = "host"
ENGINE = "engine"
MODES = (HOST, ENGINE)
ENV = "DEVSECRETS_ENGINE_MODE"


@dataclass(frozen=True, slots=True)
class EngineChoice:
    mode: str
    reason: str
    forced: bool = False

    def line(self) -> str:
        return f"{self.mode} mode: {self.reason}"


def requested(flag: str | None, env: Mapping[str, str]) -> tuple[str | None, str]:
    """The forced mode (None for automatic) and where it was asked for."""
    for value, origin in ((flag, "--engine-mode"), (env.get(ENV), ENV)):
        if not value:
            continue
        if value == "auto":
            return None, origin
        if value not in MODES:
            raise UsageProblem(f"{origin}={value}: not a mode", hint="use host, engine or auto")
        return value, origin
    return None, ""


def choose(flag: str | None, env: Mapping[str, str], runtime_root: Path) -> EngineChoice:
    return start(flag, env, runtime_root).result()


class Pending:
    """A mode choice under way: the probe runs while the caller does other work (opening
    the project); `result()` waits for it, `cancel()` stops it. Either removes the marker."""

    def __init__(self, flag: str | None, env: Mapping[str, str], runtime_root: Path) -> None:
        self.env, self.root = env, runtime_root
        self.forced, self.origin = requested(flag, env)
        self.has_cli = shutil.which("docker", path=env.get("PATH")) is not None
        self.marker: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        if self.forced is None and self.has_cli:  # the one `configcache.prestart` began
            began = engine_prestart.take_probe(runtime_root, env)
            self.marker, self.proc = began or engine_prestart.start_probe(runtime_root, env)

    def _unmark(self) -> None:
        if self.marker is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self.marker)
            self.marker = None

    def cancel(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self._unmark()

    def _answer(self) -> tuple[bool, str]:
        assert self.proc is not None
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.cancel()
            return False, "no answer in 60 s"
        finally:
            self._unmark()
        return read_answer(self.proc.returncode, out, err, self.env)

    def result(self) -> EngineChoice:
        forced, origin, runtime_root = self.forced, self.origin, self.root
        if forced is not None:
            choice = EngineChoice(forced, f"forced by {origin}", forced=True)
        elif not self.has_cli:  # a standalone compose: nothing to probe with, as before
            choice = EngineChoice(HOST, "no docker CLI to ask the engine with")
        else:
            sees, unexpected = self._answer()
            if sees:
                choice = EngineChoice(HOST, f"the engine sees {runtime_root} on this machine")
            elif unexpected:  # an engine that answers oddly, or none: `docker version` says
                compose.check_engine(self.env)
                choice = EngineChoice(
                    ENGINE,
                    f"probing whether the engine sees {runtime_root} gave an unexpected answer "
                    f"({unexpected}); engine mode works with any engine",
                )
            else:
                choice = EngineChoice(
                    ENGINE,
                    f"the engine cannot see {runtime_root} (a VM, remote host or another mount "
                    "namespace); secrets go to a tmpfs volume inside the engine",
                )
        if not choice.forced and self.has_cli:  # for the next run's head start
            engine_prestart.remember(runtime_root, self.env, choice.mode)
        if choice.mode == ENGINE:
            if not self.has_cli:
                raise UsageProblem(
                    "engine mode needs the docker CLI, which is not on PATH",
                    hint="install the docker CLI, or use --engine-mode host",
                )
            check_transport(self.env, forced=choice.forced)
        return choice


def start(flag: str | None, env: Mapping[str, str], runtime_root: Path) -> Pending:
    """Start choosing the mode (the probe runs in the background); see `Pending`."""
    return Pending(flag, env, runtime_root)


def read_answer(
    code: int | None, stdout: bytes, stderr: bytes, env: Mapping[str, str]
) -> tuple[bool, str]:
    """The probe's answer: (sees, the answer when it was neither yes nor no)."""
    text = stderr.decode(errors="replace")
    if code == 0:  # an image by that name after all: it did see the directory
        created = stdout.decode().strip()
        subprocess.run(["docker", "rm", "-f", created], capture_output=True, env=dict(env))
        return True, ""
    if "No such image" in text or ("not found" in text.lower() and "image" in text.lower()):
        return True, ""
    if "bind source path does not exist" in text or "Mounts denied" in text:
        return False, ""
    unreachable = compose.engine_unreachable(text)
    if unreachable is not None:
        raise unreachable
    lines = text.strip().splitlines()
    return False, (lines[0][:120] if lines else f"exit {code}")


def rootless_as_me(env: Mapping[str, str]) -> bool:
    """Whether the engine is a rootless one that this (non-root) user runs: its unix socket is
    ours, and a non-root user's dockerd is a rootless one. It runs in rootlesskit's user
    namespace, where our uid and gid are 0, so its containers see our files as 0:0."""
    if os.geteuid() == 0:
        return False
    key = engine_prestart.engine_key(env)  # no process for DOCKER_HOST or the default context
    if key.startswith("host:"):
        host = key.removeprefix("host:")
    elif key == "context:default":
        host = "unix:///var/run/docker.sock"
    else:
        host, _ = endpoint(env)
    if not host.startswith("unix://"):
        return False
    try:
        info = os.stat(host.removeprefix("unix://"))
    except OSError:
        return False
    return stat.S_ISSOCK(info.st_mode) and info.st_uid == os.geteuid()


def endpoint(env: Mapping[str, str]) -> tuple[str, bool]:
    """The engine's address and whether the connection uses TLS."""
    host = env.get("DOCKER_HOST")
    if host:
        tls = bool(env.get("DOCKER_TLS_VERIFY") or env.get("DOCKER_TLS"))
        return host, tls
    out = subprocess.run(
        ["docker", "context", "inspect"], capture_output=True, env=dict(env), timeout=60
    )
    try:
        context = json.loads(out.stdout)[0]
        host = str(context["Endpoints"]["docker"]["Host"])
        tls = bool((context.get("TLSMaterial") or {}).get("docker"))
    except (ValueError, LookupError, TypeError):
        return "unix:///var/run/docker.sock", False
    return host, tls


def check_transport(env: Mapping[str, str], *, forced: bool) -> None:
    """Values cross the Docker API connection in engine mode: never in clear over TCP."""
    host, tls = endpoint(env)
    if host.startswith("tcp://") and not tls and not forced:
        raise UsageProblem(
            f"the engine at {host} is reached over TCP without TLS, and engine mode would "
            "send secret values over it in clear",
            hint="use TLS (DOCKER_TLS_VERIFY=1), an ssh:// host, or force with "
            f"--engine-mode engine / {ENV}=engine",
        )

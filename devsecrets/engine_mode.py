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

import json
import os
import secrets as _random
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devsecrets.errors import ComposeError, UsageProblem

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
    forced, origin = requested(flag, env)
    has_cli = shutil.which("docker", path=env.get("PATH")) is not None
    if forced is not None:
        choice = EngineChoice(forced, f"forced by {origin}", forced=True)
    elif not has_cli:  # a standalone compose: nothing to probe with, as before engine mode
        choice = EngineChoice(HOST, "no docker CLI to ask the engine with")
    else:
        sees, unexpected = probe_sees(runtime_root, env)
        if sees:
            choice = EngineChoice(HOST, f"the engine sees {runtime_root} on this machine")
        elif unexpected:
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
    if choice.mode == ENGINE:
        if not has_cli:
            raise UsageProblem(
                "engine mode needs the docker CLI, which is not on PATH",
                hint="install the docker CLI, or use --engine-mode host",
            )
        check_transport(env, forced=choice.forced)
    return choice


def probe_sees(runtime_root: Path, env: Mapping[str, str]) -> tuple[bool, str]:
    """Whether the engine sees `runtime_root`, and the engine's answer when it was neither."""
    marker = runtime_root / f".probe-{_random.token_hex(8)}"
    os.mkdir(marker, 0o700)
    try:
        out = subprocess.run(
            [
                "docker", "create", "--pull", "never", "--network", "none",
                "--mount", f"type=bind,source={marker},target=/devsecrets-probe,readonly",
                f"devsecrets-probe-{_random.token_hex(8)}:absent",
            ],
            capture_output=True,
            env=dict(env),
            timeout=60,
        )  # fmt: skip
    finally:
        os.rmdir(marker)
    text = out.stderr.decode(errors="replace")
    if out.returncode == 0:  # an image by that name after all: it did see the directory
        created = out.stdout.decode().strip()
        subprocess.run(["docker", "rm", "-f", created], capture_output=True, env=dict(env))
        return True, ""
    if "No such image" in text or ("not found" in text.lower() and "image" in text.lower()):
        return True, ""
    if "bind source path does not exist" in text or "Mounts denied" in text:
        return False, ""
    if "Cannot connect" in text or "error during connect" in text:
        raise ComposeError(
            "no Docker engine answers",
            hint="start Docker, or check DOCKER_HOST / `docker context`",
        )
    lines = text.strip().splitlines()
    return False, (lines[0][:120] if lines else f"exit {out.returncode}")


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

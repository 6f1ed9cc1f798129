"""The few Engine API calls engine mode makes itself, over the engine's unix socket.

Where the docker CLI would reach the engine by a unix socket, engine mode asks it directly
for what it would otherwise start a `docker` process for (~40 ms of CPU each, on the path
of `up`): creating the helper (which also has to be made this way, see helper_run),
inspecting it, listing what carries our labels. Everything else, and every call when the
endpoint is not a unix socket (ssh://, tcp://, TLS), goes through the docker CLI, which
knows every transport. No value is ever sent here: the values travel on the attached
client's stdin (engine_store).

Imports only the standard library (the head start uses it before anything else loads).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TIMEOUT = 30.0
DEFAULT_SOCKET = "/var/run/docker.sock"


class ApiError(Exception):
    """No usable answer: the socket, the connection, or a reply that is not HTTP."""


def socket_for(env: Mapping[str, str]) -> str | None:
    """The engine's unix socket, as the docker CLI would find it from this environment:
    DOCKER_HOST, else the context (DOCKER_CONTEXT, else the config's current one), else the
    default socket. None when that is not a unix socket, or not known for sure."""
    host = env.get("DOCKER_HOST") or None  # empty: unset, as the CLI takes it
    if host is None:
        host = _context_host(env)
    if host is None or not host.startswith("unix://"):
        return None
    path = host.removeprefix("unix://")
    return path if path.startswith("/") else None


def config_dir(env: Mapping[str, str]) -> Path | None:
    """The docker CLI's config directory; None without DOCKER_CONFIG or HOME (the CLI would
    look the home up elsewhere: callers leave the choice to it)."""
    if not env.get("DOCKER_CONFIG") and not env.get("HOME"):
        return None
    return Path(env.get("DOCKER_CONFIG") or Path(env["HOME"]) / ".docker")


def read_config(directory: Path) -> dict[str, Any] | None:
    """Its config.json ({} when there is none); None when it cannot be read as the CLI's."""
    try:
        settings = json.loads((directory / "config.json").read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    return settings if isinstance(settings, dict) else None


def _context_host(env: Mapping[str, str]) -> str | None:
    config = config_dir(env)
    if config is None:
        return None
    name = env.get("DOCKER_CONTEXT")
    if not name:
        settings = read_config(config)
        if settings is None:
            return None
        name = settings.get("currentContext")
    if not name or name == "default":
        return "unix://" + DEFAULT_SOCKET
    if not isinstance(name, str):
        return None
    # the CLI's context store: contexts/meta/<sha256 of the name>/meta.json
    digest = hashlib.sha256(name.encode()).hexdigest()
    try:
        meta = json.loads((config / "contexts" / "meta" / digest / "meta.json").read_text())
        host = meta["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return host if isinstance(host, str) else None


def call(socket_path: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request (unversioned: the engine's own API version); its status and body."""
    import socket  # only here: the head start pays for it only when it gets this far

    head = f"{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(TIMEOUT)
            conn.connect(socket_path)
            conn.sendall(head.encode() + b"\r\n" + (body or b""))
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    except OSError as e:
        raise ApiError(str(e)) from e
    return _parse(b"".join(chunks))


def _parse(reply: bytes) -> tuple[int, bytes]:
    head, sep, rest = reply.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split()
    if (
        not sep
        or len(status) < 2
        or not status[0].startswith(b"HTTP/1.")
        or not status[1].isdigit()
    ):
        raise ApiError("not an HTTP answer")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if headers.get(b"transfer-encoding") == b"chunked":
        rest = _unchunk(rest)
    return int(status[1]), rest


def _unchunk(data: bytes) -> bytes:
    out: list[bytes] = []
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError as e:
            raise ApiError("a broken chunked answer") from e
        if not sep or size == 0:
            return b"".join(out)
        out.append(data[:size])
        data = data[size + 2 :]


def get_json(socket_path: str, path: str) -> object:
    """A GET whose answer is JSON (200), parsed; ApiError otherwise."""
    status, body = call(socket_path, "GET", path)
    if status != 200:
        raise ApiError(f"HTTP {status}")
    try:
        return json.loads(body)
    except ValueError as e:
        raise ApiError("no JSON") from e


def container(name: str, env: Mapping[str, str]) -> dict[str, Any] | None:
    """The engine's inspect of container `name` (the API's answer, else `docker inspect`'s):
    None when there is none by that name (or the CLI failed), {} when the answer is unclear."""
    socket = socket_for(env)
    if socket is not None:
        try:
            status, body = call(socket, "GET", f"/containers/{name}/json")
        except ApiError:
            status, body = 0, b""  # asked again by the CLI
        if status == 404:
            return None
        if status == 200:
            return _object(body)
    import subprocess

    try:
        out = subprocess.run(
            ["docker", "inspect", "--type", "container", name],
            capture_output=True, env=dict(env), timeout=120,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return _object(out.stdout)  # a list of one


def _object(body: bytes) -> dict[str, Any]:
    try:
        found = json.loads(body)
    except ValueError:
        return {}
    if isinstance(found, list) and len(found) == 1:
        found = found[0]
    return found if isinstance(found, dict) else {}

"""engine_api: which socket the docker CLI would use (else None: the CLI does the call), and
how an answer is read. The calls themselves run against real engines in
test_engine_store.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from devsecrets import engine_api


def _context(config: Path, name: str, host: str) -> None:
    meta = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Endpoints": {"docker": {"Host": host}}})
    )


def test_the_socket_is_the_one_the_cli_would_use(tmp_path: Path) -> None:
    config = tmp_path / ".docker"
    config.mkdir()
    home = {"HOME": str(tmp_path)}
    assert engine_api.socket_for({**home, "DOCKER_HOST": "unix:///run/x.sock"}) == "/run/x.sock"
    assert engine_api.socket_for({**home, "DOCKER_HOST": "ssh://me@there"}) is None
    assert engine_api.socket_for({**home, "DOCKER_HOST": "tcp://127.0.0.1:2375"}) is None
    assert engine_api.socket_for({**home, "DOCKER_HOST": "unix://relative.sock"}) is None
    assert engine_api.socket_for(home) == "/var/run/docker.sock"  # no config: the default
    assert engine_api.socket_for({**home, "DOCKER_HOST": ""}) == "/var/run/docker.sock"
    _context(config, "desk", "unix:///home/me/.docker/desktop/docker.sock")
    _context(config, "far", "ssh://me@far")
    (config / "config.json").write_text(json.dumps({"currentContext": "desk"}))
    assert engine_api.socket_for(home) == "/home/me/.docker/desktop/docker.sock"
    assert engine_api.socket_for({**home, "DOCKER_CONTEXT": "far"}) is None
    assert engine_api.socket_for({**home, "DOCKER_CONTEXT": "gone"}) is None  # no meta: ask
    assert engine_api.socket_for({**home, "DOCKER_CONTEXT": "default"}) == "/var/run/docker.sock"
    assert (  # DOCKER_HOST wins over any context, as in the CLI
        engine_api.socket_for({**home, "DOCKER_CONTEXT": "far", "DOCKER_HOST": "unix:///a"}) == "/a"
    )
    (config / "config.json").write_text("{not json")
    assert engine_api.socket_for(home) is None
    (config / "config.json").write_text(json.dumps({"currentContext": ["odd"]}))
    assert engine_api.socket_for(home) is None
    assert engine_api.socket_for({}) is None  # no HOME: the CLI finds it elsewhere


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b'HTTP/1.1 201 Created\r\nContent-Length: 9\r\n\r\n{"Id":1}\n', (201, b'{"Id":1}\n')),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[1,2\r\n2\r\n,3\r\n1\r\n]\r\n0\r\n\r\n",
            (200, b"[1,2,3]"),
        ),
        (b"HTTP/1.0 404 Not Found\r\n\r\n", (404, b"")),
    ],
)
def test_an_answer_is_read(reply: bytes, expected: tuple[int, bytes]) -> None:
    assert engine_api._parse(reply) == expected


@pytest.mark.parametrize(
    "reply", [b"", b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 abc\r\n\r\n", b"HTTP/1.1 200 OK"]
)
def test_what_is_not_an_http_answer_is_an_api_error(reply: bytes) -> None:
    with pytest.raises(engine_api.ApiError):
        engine_api._parse(reply)


def test_a_socket_nobody_listens_on_is_an_api_error(tmp_path: Path) -> None:
    with pytest.raises(engine_api.ApiError):
        engine_api.call(str(tmp_path / "none.sock"), "GET", "/version")

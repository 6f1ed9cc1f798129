"""A remote engine over ssh, on loopback: `.ci/sshd-loopback.sh` runs a private sshd on
127.0.0.1 whose key may only run `docker system dial-stdio` against the isolated engine, so
`DOCKER_HOST=ssh://root@127.0.0.1:PORT` is an engine elsewhere, as a remote host is.
DEVSECRETS_SSH_DOCKER_HOST is that address and DEVSECRETS_SSH_PATH the directory of the
`ssh` wrapper that carries the private config (.ci/run sets both); without them the test
starts such an sshd itself."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IN_CI, TEST_IMAGE, User, devsecrets, project_name, write_stack
from test_engine_mode import _container, _docker, _env, _remove_project, _volumes, isolated

__all__ = ["isolated"]  # the fixture, imported to be used here

SSH_HOST = os.environ.get("DEVSECRETS_SSH_DOCKER_HOST", "")
SSH_PATH = os.environ.get("DEVSECRETS_SSH_PATH", "")


SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "sshd-loopback.sh"


@pytest.fixture(scope="session")
def remote(isolated: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment that reaches the isolated engine over ssh: the sshd .ci/run started,
    else one started here (on a free loopback port) and stopped after the session."""
    if SSH_HOST and SSH_PATH:
        yield {"DOCKER_HOST": SSH_HOST, "PATH": f"{SSH_PATH}:{os.environ['PATH']}"}
        return
    if not os.path.exists("/usr/sbin/sshd"):
        reason = "no sshd (openssh-server) for an engine over ssh on loopback"
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = tmp_path_factory.mktemp("sshd")
    env = {
        **os.environ,
        "DEVSECRETS_SSH_STATE": str(state),
        "DEVSECRETS_SSH_PORT": str(port),
        "DEVSECRETS_ISOLATED_DOCKER_HOST": isolated,
    }
    started = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True)
    try:
        assert started.returncode == 0, started.stderr.decode()
        host, bindir = started.stdout.decode().split()
        yield {"DOCKER_HOST": host, "PATH": f"{bindir}:{os.environ['PATH']}"}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True)


def test_an_engine_over_ssh_gets_engine_mode_and_up_works(
    alice: User, isolated: str, remote: dict[str, str], runtime_dir: Path
) -> None:
    value = b"canary-ssh-" + secrets.token_hex(8).encode()
    assert alice.run("set", "db_password", input=value).exit_code == 0
    write_stack(alice.project, TEST_IMAGE, {"api": {"secrets": ["db_password"]}})
    project = project_name()
    files = ["-f", "docker-stack.yml", "-p", project]
    env = {**_env(alice, isolated, runtime_dir), **remote}
    try:
        up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert up.returncode == 0, up.stderr.decode()
        said = up.stderr.decode()
        assert "devsecrets: engine mode: the engine cannot see" in said  # detected, not forced
        assert value not in up.stdout + up.stderr
        # the containers run on the engine behind ssh, with the value inside
        cid = _container(isolated, project, "api")
        assert _docker(isolated, "exec", cid, "cat", "/run/secrets/db_password").stdout == value
        down = devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        assert down.returncode == 0, down.stderr.decode()
        assert not _volumes(isolated, project)
        assert not _docker(
            isolated, "ps", "-aq", "--filter", f"label=devsecrets.project={project}"
        ).stdout.strip()
    finally:
        devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        _remove_project(isolated, project)

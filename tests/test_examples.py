"""Every example in examples/ renders, compose accepts its override, and with a local
busybox as DEMO_IMAGE each one runs end to end with its own demo store and key."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import DOCKER_CONFIG, compose_down, devsecrets, project_containers, project_name

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.parent.name for p in (ROOT / "examples").glob("*/docker-stack.yml"))


def example_env(tmp_path: Path, image: str, runtime_dir: Path, project: str) -> dict[str, str]:
    import os

    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": DOCKER_CONFIG,
        "DOCKER_HOST": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
        "PYTHONPATH": str(ROOT),
        "SOPS_AGE_KEY_FILE": "demo-age-key.txt",
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "DEMO_IMAGE": image,
        "COMPOSE_PROJECT_NAME": project,
    }


def test_every_example_has_a_readme_a_store_and_a_marked_demo_key():
    assert {"shop", "tls", "basic-auth", "rotation"} <= set(EXAMPLES)
    for name in EXAMPLES:
        directory = ROOT / "examples" / name
        assert (directory / "README.md").is_file(), name
        assert (directory / ".devsecrets" / "recipients.yaml").is_file(), name
        key = (directory / "demo-age-key.txt").read_text()
        assert key.startswith("# THROWAWAY demo key"), name
        assert "DEMO_IMAGE" in (directory / "docker-stack.yml").read_text(), name


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_example_renders_and_compose_accepts_the_override(
    name: str, docker_engine: str, runtime_dir: Path, tmp_path: Path
):
    directory = ROOT / "examples" / name
    project = project_name()
    env = example_env(tmp_path, docker_engine, runtime_dir, project)
    try:
        rendered = devsecrets(["render"], cwd=directory, env=env)
        assert rendered.returncode == 0, rendered.stderr.decode()
        override = Path(rendered.stdout.decode().strip())
        argv = ["docker", "compose", "-f", "docker-stack.yml", "-f", str(override)]
        config = subprocess.run(
            [*argv, "config", "--format", "json"],
            cwd=directory,
            env=env,
            capture_output=True,
            check=False,
            timeout=120,
        )
        assert config.returncode == 0, config.stderr.decode()
        model = json.loads(config.stdout)
        for service, spec in model["services"].items():
            if not spec.get("secrets"):
                continue
            sources = [v["source"] for v in spec.get("volumes", []) if v.get("type") == "bind"]
            assert any(s.startswith(str(runtime_dir)) for s in sources), service
        # the override holds paths only
        assert b"BEGIN" not in override.read_bytes()
    finally:
        devsecrets(["down"], cwd=directory, env=env)
    assert not (runtime_dir / project).exists()


def test_tls_and_basic_auth_run_end_to_end(docker_engine: str, runtime_dir: Path, tmp_path: Path):
    outputs = {}
    for name in ("tls", "basic-auth"):
        project = project_name()
        env = example_env(tmp_path, docker_engine, runtime_dir, project)
        directory = ROOT / "examples" / name
        try:
            result = devsecrets(["up"], cwd=directory, env=env)
        finally:
            compose_down(project, directory)
        assert result.returncode == 0, result.stderr.decode()
        outputs[name] = result.stdout.decode()
        assert not (runtime_dir / project).exists()
    tls = outputs["tls"]
    assert re.search(r"proxy-1 +\| -r--r--r-- .* tls_cert", tls)
    assert re.search(r"proxy-1 +\| -r-------- .* tls_key", tls)
    assert "api: db password is 28 bytes" in tls
    assert re.search(r"db-1 +\| -r--r--r-- .* db_password", tls)
    assert "tls_key" not in "".join(ln for ln in tls.splitlines() if ln.startswith("api"))
    assert "PRIVATE KEY" not in tls
    assert re.search(r"web-1 +\| -r-------- .* htpasswd", outputs["basic-auth"])
    assert "web: htpasswd has 1 user(s)" in outputs["basic-auth"]


def test_rotation_switches_from_v1_to_v2(docker_engine: str, runtime_dir: Path, tmp_path: Path):
    directory = ROOT / "examples" / "rotation"
    project = project_name()
    env = example_env(tmp_path, docker_engine, runtime_dir, project)

    def size_seen() -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ids = project_containers(project, "api")
            if ids:
                seen = subprocess.run(
                    ["docker", "exec", ids[0], "wc", "-c", "/run/secrets/db_password"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if seen.returncode == 0:
                    return seen.stdout.split()[0]
            time.sleep(0.2)
        raise AssertionError("the api container never showed its secret")

    try:
        first = devsecrets(["up", "-d"], cwd=directory, env=env)  # DB_VERSION=v1 from .env
        assert first.returncode == 0, first.stderr.decode()
        assert size_seen() == "20"
        second = devsecrets(["up", "-d"], cwd=directory, env={**env, "DB_VERSION": "v2"})
        assert second.returncode == 0, second.stderr.decode()
        assert size_seen() == "28"
    finally:
        devsecrets(["down", "-t", "0"], cwd=directory, env=env)
        compose_down(project, directory)
    assert not (runtime_dir / project).exists()

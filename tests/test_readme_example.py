"""The README's main command, run as written, on the bundled example."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import DOCKER_CONFIG, compose_down

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[1]


def readme_command() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"## Try it.*?```sh\n(.*?)\n```", text, re.S)
    assert match, "README has no 'Try it' command block"
    return match.group(1).strip()


def test_readme_main_command_runs_the_example(
    docker_engine: str, runtime_dir: Path, tmp_path: Path
):
    command = readme_command()
    assert command.startswith("pip install -e . && ")
    # the install already happened for this test run; run the rest exactly as written
    rest = command.removeprefix("pip install -e . && ")
    env = {
        "PATH": subprocess.os.environ["PATH"],
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": DOCKER_CONFIG,
        "DOCKER_HOST": subprocess.os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "DEMO_IMAGE": docker_engine,
    }
    try:
        result = subprocess.run(
            ["bash", "-c", rest], cwd=ROOT, env=env, capture_output=True, timeout=300, check=False
        )
    finally:
        compose_down("shop", ROOT / "examples" / "shop")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert re.search(r"api-1 +\| -r--r--r-- +1 0 +0 +28 .* db_password", out)
    assert re.search(r"api-1 +\| -r-------- +1 1000 +1000 +19 .* token", out)
    assert "db password is 28 bytes" in out
    assert re.search(r"worker-1 +\| -r--r--r-- +1 0 +0 +28 .* db_password", out)
    assert "token" not in "".join(line for line in out.splitlines() if line.startswith("worker"))
    assert b"correct-horse" not in result.stdout + result.stderr
    assert not (runtime_dir / "shop").exists()


def test_the_try_it_section_names_demo_image():
    """A user without Docker Hub learns how to run the example from the README itself."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"## Try it(.*?)\n## ", text, re.S).group(1)
    before_command = section.split("```sh")[0]
    assert "DEMO_IMAGE" in before_command

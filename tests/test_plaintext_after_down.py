"""The README's security model: plaintext only while the stack runs, wiped by `down`.

A value compose interpolates into a service (`environment: {API_SECRET: ${API_SECRET}}`) also
shows up in `docker compose config`; devsecrets caches that output in the runtime root, so the
cache keeps only what devsecrets reads, and the canary is nowhere in the root after `down`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import User, compose_down, devsecrets, project_name

from devsecrets.configcache import CACHE_FILE

CANARY = b"canary-down-7f3a91"

pytestmark = pytest.mark.docker


def files_with(needle: bytes, root: Path) -> list[str]:
    """Names (never content) of files under `root` holding `needle`."""
    hits = []
    for dirpath, _, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(dirpath) / name
            if not path.is_symlink() and path.is_file() and needle in path.read_bytes():
                hits.append(str(path.relative_to(root)))
    return hits


def test_an_interpolated_value_is_gone_from_the_runtime_root_after_down(
    alice: User, docker_engine: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(alice.project)
    project = alice.project
    stack = {
        "services": {
            "app": {
                "image": docker_engine,
                "network_mode": "none",
                "stop_signal": "SIGKILL",
                "command": ["sleep", "600"],
                "environment": {"API_SECRET": "${API_SECRET}"},
                "labels": {"copy": "${API_SECRET}"},
                "secrets": ["api_secret"],
            }
        },
        "secrets": {"api_secret": {"external": True}},
    }
    (project / "compose.yaml").write_text(yaml.safe_dump(stack))
    (project / ".env").write_bytes(b"API_SECRET=" + CANARY + b"\n")
    imported = alice.run("import", "--env-key", "API_SECRET", "--yes")
    assert imported.exit_code == 0, imported.stderr
    alice.run("set", "api_secret", input=CANARY)
    root = Path(alice.env["DEVSECRETS_RUNTIME_DIR"] or "")
    name = project_name()
    env = {**alice.subprocess_env(), "COMPOSE_PROJECT_NAME": name}
    try:
        up = devsecrets(["up", "-d"], cwd=project, env=env)
        assert up.returncode == 0, up.stderr.decode()
        cache = root / CACHE_FILE
        assert cache.exists()  # the cache is in use, and
        leaked = CANARY in cache.read_bytes()
        assert not leaked  # the cache never holds an environment value
        config = json.loads(cache.read_bytes())
        (services,) = [entry for entry in config.values()]
        assert "environment" not in json.loads(services)["services"]["app"]
    finally:
        down = devsecrets(["down"], cwd=project, env=env)
        compose_down(name, project)
    assert down.returncode == 0, down.stderr.decode()
    assert files_with(CANARY, root) == []

    # an entry an older devsecrets cached whole is slimmed by the next run that caches
    cache = root / CACHE_FILE
    entries = json.loads(cache.read_bytes())
    whole = {"name": "old", "services": {"app": {"environment": {"K": CANARY.decode()}}}}
    entries["0" * 64] = json.dumps(whole)
    cache.write_text(json.dumps(entries))
    env["COMPOSE_PROJECT_NAME"] = project_name()  # another key: a miss, so a write
    rendered = devsecrets(["render", "--stdout"], cwd=project, env=env)
    assert rendered.returncode == 0, rendered.stderr.decode()
    devsecrets(["down"], cwd=project, env=env)
    assert files_with(CANARY, root) == []
    assert "0" * 64 in json.loads(cache.read_bytes())  # kept, without the value

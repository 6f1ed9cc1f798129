"""The `*_FILE` readers in templates/: each reads NAME_FILE, else /run/secrets/NAME."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import IN_CI

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
CANARY = b"canary-templates-3f9a\n"
MISSING = "devsecrets-template-test-no-such-secret"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        reason = f"{name} is not installed; its template is not run"
        if IN_CI:  # .ci/run installs node, java and go: in CI a missing one is a failure
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def secret_env(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "secret"
    path.write_bytes(CANARY)
    return {"PATH": os.environ["PATH"], "TLS_KEY_FILE": str(path)}


def run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=300, check=False)


def test_python(tmp_path: Path):
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from read_secret import read_secret;"
        "sys.stdout.buffer.write(read_secret(sys.argv[2]))"
    )
    env = secret_env(tmp_path)
    found = run(["python3", "-c", code, str(TEMPLATES), "tls.key"], env, tmp_path)
    assert found.stdout == CANARY
    missing = run(["python3", "-c", code, str(TEMPLATES), MISSING], env, tmp_path)
    assert missing.returncode != 0
    assert f"/run/secrets/{MISSING}".encode() in missing.stderr


def test_node(tmp_path: Path):
    node = tool("node")
    code = (
        "const {readSecret} = require(process.argv[1]);"
        "process.stdout.write(readSecret(process.argv[2]))"
    )
    env = secret_env(tmp_path)
    script = str(TEMPLATES / "read_secret.js")
    found = run([node, "-e", code, script, "tls.key"], env, tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout == CANARY
    stripped = run(
        [node, "-e", code.replace("argv[2])", "argv[2], {stripNewline: true})"), script, "tls.key"],
        env,
        tmp_path,
    )
    assert stripped.stdout == CANARY.rstrip(b"\n")
    missing = run([node, "-e", code, script, MISSING], env, tmp_path)
    assert missing.returncode != 0
    assert f"/run/secrets/{MISSING}".encode() in missing.stderr


@pytest.mark.slow
def test_java(tmp_path: Path):
    java = tool("java")
    env = secret_env(tmp_path)
    source = str(TEMPLATES / "ReadSecret.java")
    found = run([java, source, "tls.key"], env, tmp_path)  # single-file launch, Java >= 11
    assert found.returncode == 0, found.stderr
    assert found.stdout == CANARY
    missing = run([java, source, MISSING], env, tmp_path)
    assert missing.returncode != 0
    assert f"/run/secrets/{MISSING}".encode() in missing.stderr


@pytest.mark.slow  # `go build`: seconds of CPU, as javac is for test_java
def test_go(tmp_path: Path):
    go = tool("go")
    module = tmp_path / "app"
    (module / "readsecret").mkdir(parents=True)
    shutil.copy(TEMPLATES / "readsecret.go", module / "readsecret" / "readsecret.go")
    (module / "go.mod").write_text("module example.com/app\n\ngo 1.18\n")
    (module / "main.go").write_text(
        'package main\n\nimport (\n\t"os"\n\n\t"example.com/app/readsecret"\n)\n\n'
        "func main() {\n\tvalue, err := readsecret.ReadSecret(os.Args[1])\n"
        "\tif err != nil {\n\t\tos.Stderr.WriteString(err.Error())\n\t\tos.Exit(1)\n\t}\n"
        "\tos.Stdout.Write(value)\n}\n"
    )
    env = {
        **secret_env(tmp_path),
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": os.environ.get("DOCKER_CONFIG", str(Path.home() / ".docker")),
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GOCACHE": str(tmp_path / "cache"),
    }
    found = run([go, "run", ".", "tls.key"], env, module)
    assert found.returncode == 0, found.stderr
    assert found.stdout == CANARY
    missing = run([go, "run", ".", MISSING], env, module)
    assert missing.returncode != 0
    assert f"/run/secrets/{MISSING}".encode() in missing.stderr

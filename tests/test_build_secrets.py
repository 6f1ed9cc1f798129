"""Build-time secrets: a stack's `build.secrets` get the store's values through a tmpfs file,
and the value ends up in no image layer, no image config and nowhere in the engine's data
(build cache included). The scanner is shown to find a canary that a build does leak."""

from __future__ import annotations

import hashlib
import io
import os
import secrets as _random
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import (
    IN_CI,
    TEST_IMAGE,
    User,
    compose_down,
    devsecrets,
    need,
    project_name,
    write_stack,
)

from devsecrets.buildsecrets import plan_build
from devsecrets.errors import StackError
from devsecrets.layout import plan
from devsecrets.materialize import materialize
from devsecrets.needs import needs
from devsecrets.render import render, to_yaml
from devsecrets.stack import read_model

CANARY = b"canary-build-5e1f"

HASHES = (
    'RUN --mount=type=secret,id=npm_token sh -c "sha256sum /run/secrets/npm_token '
    '| cut -c1-64 > /token.sha256; echo the token is $(cat /run/secrets/npm_token)"\n'
)


def config(build_secrets: list, secrets: dict) -> dict:
    return {
        "name": "p",
        "services": {
            "api": {"image": "x", "build": {"context": ".", "secrets": build_secrets}},
            "web": {"image": "y", "secrets": [{"source": "db"}]},
        },
        "secrets": {"db": {"external": True}, **secrets},
    }


def test_the_plan_takes_external_and_stored_file_sources_only():
    model = read_model(
        config(
            [{"source": "npm_token"}, {"source": "pip"}, {"source": "plain"}, {"source": "env"}],
            {
                "npm_token": {"external": True, "name": "npm_v2"},
                "pip": {"external": True},
                "plain": {"file": "./plain.txt"},
                "env": {"environment": "HOME"},
            },
        )
    )
    assert model.build_secrets == {"api": ("npm_token", "pip", "plain", "env")}
    built = plan_build(needs(model, {"npm_v2", "db"}))
    assert [(f.key, f.store_name, f.services) for f in built.files] == [
        ("npm_token", "npm_v2", ("api",))
    ]
    assert built.missing == {"pip": ("api",)}
    stored_file = plan_build(needs(model, {"npm_v2", "pip", "plain"}))  # the store wins over a file
    assert [f.key for f in stored_file.files] == ["npm_token", "pip", "plain"]
    assert stored_file.missing == {}
    assert plan_build(needs(read_model(config([], {})), {"db"})).files == ()


def test_an_undeclared_build_secret_is_one_error():
    with pytest.raises(StackError, match="builds with secret 'nope', which is not declared"):
        read_model(config([{"source": "nope"}], {}))


def test_the_override_points_the_secret_at_a_private_tmpfs_file(tmp_path: Path):
    model = read_model(config([{"source": "npm_token"}], {"npm_token": {"external": True}}))
    layout = plan(model, {"npm_token", "db"})
    assert layout.store_names() == {"npm_token", "db"}
    rendered = render(layout, tmp_path)
    assert rendered["secrets"] == {"npm_token": {"file": str(tmp_path / "build/npm_token")}}
    assert "npm_token: !override\n    file: " in to_yaml(rendered)
    assert "secrets" not in render(plan(model, {"db"}), tmp_path)  # missing: left to compose
    without = read_model(config([], {}))
    assert "secrets" not in render(plan(without, {"db"}), tmp_path)

    project_dir = _owned_project_dir(tmp_path)
    materialize(project_dir, layout, {"npm_token": CANARY, "db": b"d"})
    built = project_dir / "build" / "npm_token"
    assert built.read_bytes() == CANARY
    info = built.lstat()
    assert stat.S_IMODE(info.st_mode) == 0o400 and info.st_uid == os.getuid()
    assert stat.S_IMODE((project_dir / "build").lstat().st_mode) == 0o700
    materialize(project_dir, plan(without, {"db"}), {"db": b"d"})  # the stack lost its build
    assert not (project_dir / "build").exists()


def _owned_project_dir(tmp_path: Path) -> Path:
    """A project directory made the way `prepare` makes it (owned, marked, 0700)."""
    from devsecrets import runtime_dir

    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    project_dir = root / "p"
    os.close(runtime_dir.open_owned(project_dir))
    return project_dir


# -- the real engine: BuildKit secret mounts ----------------------------------------------------


@pytest.fixture
def build_stack(alice: User, docker_engine: str, runtime_dir: Path):
    """A service built FROM the local busybox image, off the network, whose RUN step reads
    the secret npm_token (external, as for `docker stack deploy`)."""
    image = f"devsecrets-test-build-{_random.token_hex(4)}"
    (alice.project / "Dockerfile").write_text(f"FROM {docker_engine}\n{HASHES}")
    write_stack(
        alice.project,
        docker_engine,
        {
            "api": {
                "image": image,
                "build": {"context": ".", "network": "none", "secrets": ["npm_token"]},
                "command": ["cat", "/token.sha256"],
            }
        },
        {"secrets": {"npm_token": {"external": True}}},
    )
    name = project_name()
    env = {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": name,
    }
    yield env, image, runtime_dir
    compose_down(name, alice.project)
    subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, check=False)


def image_hash(image: str) -> str:
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "cat", "/token.sha256"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return out.stdout.decode().strip()


def places_holding(canary: bytes, image: str) -> list[str]:
    """Where `canary` appears: in `docker save IMAGE` (every file, every layer's files,
    compressed or not) and in the engine's data directory (layers, build cache, history)."""
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
    found = [f"docker save: {where}" for where in _in_tar(saved, canary, image)]
    root = subprocess.run(
        ["docker", "info", "--format", "{{.DockerRootDir}}"], capture_output=True, text=True
    ).stdout.strip()
    if not root or not os.access(root, os.R_OK | os.X_OK):
        if IN_CI:
            pytest.fail(f"CI=true but the engine's data directory {root!r} is not readable")
    else:
        for directory, _, names in os.walk(root):
            for name in names:
                path = Path(directory, name)
                try:
                    if path.is_symlink() or not path.is_file():
                        continue
                    if canary in path.read_bytes():
                        found.append(str(path))
                except OSError:
                    continue
    return found


def _in_tar(data: bytes, canary: bytes, where: str) -> list[str]:
    found = [where] if canary in data else []
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError):
        return found
    with archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            extracted = archive.extractfile(member)
            if extracted is not None:
                found += _in_tar(extracted.read(), canary, f"{where}/{member.name}")
    return found


@pytest.mark.docker
def test_build_reads_the_secret_and_leaves_it_in_no_layer_or_cache(alice: User, build_stack):
    env, image, runtime = build_stack
    alice.run("set", "npm_token", input=CANARY)
    built = devsecrets(["build", "--no-cache"], cwd=alice.project, env=env, timeout=600)
    out = built.stdout + built.stderr
    assert built.returncode == 0, out.decode(errors="replace")
    assert b"build secrets: npm_token" in out
    assert b"the token is ****" in out  # the RUN step's output is masked
    assert CANARY not in out
    assert image_hash(image) == hashlib.sha256(CANARY).hexdigest()  # the RUN step read it
    assert places_holding(CANARY, image) == []
    assert not any(runtime.glob("*/build")), "the build's tmpfs files outlived it"


@pytest.mark.docker
def test_the_scan_finds_a_secret_a_build_copies_into_a_layer(alice: User, build_stack):
    """The control: the same scan, on a build that does leak, finds the canary."""
    env, image, _ = build_stack
    leaked = b"canary-build-leak-" + _random.token_hex(4).encode()
    alice.run("set", "npm_token", input=leaked)
    (alice.project / "Dockerfile").write_text(
        f"FROM {TEST_IMAGE}\n"
        "RUN --mount=type=secret,id=npm_token cp /run/secrets/npm_token /leaked\n"
    )
    built = devsecrets(["build", "--no-cache"], cwd=alice.project, env=env, timeout=600)
    assert built.returncode == 0, (built.stdout + built.stderr).decode(errors="replace")
    holding = places_holding(leaked, image)
    assert any(place.startswith("docker save: ") for place in holding), holding


@pytest.mark.docker
def test_without_devsecrets_compose_cannot_build_it(alice: User, build_stack):
    """Why the override is needed: compose refuses an external build secret."""
    env, _, _ = build_stack
    plain = subprocess.run(
        ["docker", "compose", "-f", "docker-stack.yml", "build"],
        cwd=alice.project,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert plain.returncode != 0
    assert b"build.secrets only supports environment or file-based secrets" in plain.stderr


@pytest.mark.docker
def test_a_missing_build_secret_fails_build_and_only_warns_up(alice: User, build_stack):
    env, _, _ = build_stack
    built = devsecrets(["build"], cwd=alice.project, env=env)
    assert built.returncode == 1
    assert b"secret(s) the store lacks: npm_token (api)" in built.stderr
    assert b"devsecrets set npm_token" in built.stderr
    rendered = devsecrets(["render", "--stdout"], cwd=alice.project, env=env)
    assert rendered.returncode == 0, rendered.stderr.decode()
    assert b"the store lacks build secret npm_token: building api will fail" in rendered.stderr


@pytest.mark.docker
def test_up_build_gets_the_secret_too(alice: User, build_stack):
    env, image, _ = build_stack
    alice.run("set", "npm_token", input=CANARY)
    up = devsecrets(["up", "--build", "--no-watch"], cwd=alice.project, env=env, timeout=600)
    out = up.stdout + up.stderr
    assert up.returncode == 0, out.decode(errors="replace")
    assert hashlib.sha256(CANARY).hexdigest().encode() in up.stdout  # the service's log
    assert CANARY not in out
    assert places_holding(CANARY, image) == []


@pytest.mark.docker
def test_engine_mode_builds_with_the_secret_from_this_machine(alice: User, build_stack):
    """In engine mode the services' secrets live in the engine, but compose reads build
    secrets here and hands them to BuildKit: the engine needs no access to our files."""
    isolated = os.environ.get("DEVSECRETS_ISOLATED_DOCKER_HOST", "")
    probe = subprocess.run(
        ["docker", "image", "inspect", TEST_IMAGE],
        env={**os.environ, "DOCKER_HOST": isolated},
        capture_output=True,
    )
    if not isolated or probe.returncode != 0:
        need("no isolated engine: run `bash .ci/dockerd-isolated.sh start` and export "
             "DEVSECRETS_ISOLATED_DOCKER_HOST")  # fmt: skip
    env, image, runtime = build_stack
    env = {**env, "DOCKER_HOST": isolated, "DEVSECRETS_HELPER_IMAGE": TEST_IMAGE}
    alice.run("set", "npm_token", input=CANARY)
    built = devsecrets(
        ["build", "--engine-mode", "engine", "--no-cache"], cwd=alice.project, env=env, timeout=600
    )
    out = built.stdout + built.stderr
    try:
        assert built.returncode == 0, out.decode(errors="replace")
        assert b"engine mode" in out and b"the token is ****" in out and CANARY not in out
        host = {**os.environ, "DOCKER_HOST": isolated}
        shown = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", image, "cat", "/token.sha256"],
            env=host,
            capture_output=True,
            timeout=120,
        )
        assert shown.stdout.decode().strip() == hashlib.sha256(CANARY).hexdigest()
        assert not any(runtime.glob("*/build"))
    finally:
        subprocess.run(
            ["docker", "image", "rm", "-f", image], env={**os.environ, "DOCKER_HOST": isolated},
            capture_output=True, check=False,
        )  # fmt: skip


@pytest.mark.docker
def test_compose_build_is_devsecrets_build(alice: User, build_stack):
    env, image, runtime = build_stack
    alice.run("set", "npm_token", input=CANARY)
    built = devsecrets(["compose", "build", "--no-cache"], cwd=alice.project, env=env, timeout=600)
    out = built.stdout + built.stderr
    assert built.returncode == 0, out.decode(errors="replace")
    assert b"the token is ****" in out and CANARY not in out  # masked like `build`
    assert image_hash(image) == hashlib.sha256(CANARY).hexdigest()
    assert not any(runtime.glob("*/build"))

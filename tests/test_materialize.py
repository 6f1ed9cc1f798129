"""Materializing on tmpfs: modes, owners, atomic replacement, and exact cleanup."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from devsecrets.layout import plan
from devsecrets.materialize import materialize
from devsecrets.stack import read_model

MODEL = {
    "name": "shop",
    "services": {
        "api": {
            "secrets": [
                {"source": "db", "target": "/run/secrets/db"},
                {
                    "source": "tok",
                    "target": "nested/token",
                    "uid": "1000",
                    "gid": "1001",
                    "mode": "0400",
                },
                {"source": "tls", "target": "/etc/app/tls.key", "mode": "0440"},
            ]
        },
    },
    "secrets": {k: {"external": True} for k in ("db", "tok", "tls")},
}
VALUES = {"db": b"one", "tok": b"two", "tls": b"three"}


@pytest.fixture
def layout():
    return plan(read_model(MODEL), in_store=set(VALUES))


def test_files_get_the_grants_mode_and_owner(tmp_path: Path, layout):
    written = materialize(tmp_path / "shop", layout, VALUES)
    assert all(w.changed for w in written)
    base = tmp_path / "shop" / "services" / "api"
    db = (base / "run-secrets" / "db").stat()
    assert stat.S_IMODE(db.st_mode) == 0o444
    if os.geteuid() == 0:
        assert (db.st_uid, db.st_gid) == (0, 0)
    token = (base / "run-secrets" / "nested" / "token").stat()
    assert stat.S_IMODE(token.st_mode) == 0o400
    if os.geteuid() == 0:
        assert (token.st_uid, token.st_gid) == (1000, 1001)
    assert (base / "run-secrets" / "nested" / "token").read_bytes() == b"two"
    assert stat.S_IMODE((tmp_path / "shop").stat().st_mode) == 0o700
    assert stat.S_IMODE((base / "run-secrets").stat().st_mode) == 0o755
    assert list((base / "files").rglob("tls.key"))[0].read_bytes() == b"three"


def test_unchanged_values_are_not_rewritten_and_changed_ones_get_a_new_inode(
    tmp_path: Path, layout
):
    materialize(tmp_path / "shop", layout, VALUES)
    db = tmp_path / "shop" / "services" / "api" / "run-secrets" / "db"
    inode = db.stat().st_ino
    again = materialize(tmp_path / "shop", layout, VALUES)
    assert not any(w.changed for w in again)
    assert db.stat().st_ino == inode
    materialize(tmp_path / "shop", layout, {**VALUES, "db": b"new"})
    assert db.read_bytes() == b"new"
    assert db.stat().st_ino != inode  # replaced by rename: readers never see a partial file
    assert list((tmp_path / "shop" / ".staging").iterdir()) == []


def test_files_no_longer_granted_are_removed(tmp_path: Path, layout):
    materialize(tmp_path / "shop", layout, VALUES)
    smaller = {**MODEL, "services": {"api": {"secrets": MODEL["services"]["api"]["secrets"][:1]}}}
    materialize(tmp_path / "shop", plan(read_model(smaller), set(VALUES)), VALUES)
    left = sorted(
        str(p.relative_to(tmp_path / "shop")) for p in (tmp_path / "shop" / "services").rglob("*")
    )
    assert left == ["services/api", "services/api/run-secrets", "services/api/run-secrets/db"]


def test_non_root_says_which_grants_cannot_get_their_owner(monkeypatch, layout):
    from devsecrets import materialize as module

    monkeypatch.setattr(module.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(module.os, "getuid", lambda: 1000)
    monkeypatch.setattr(module.os, "getgid", lambda: 1000)
    warnings = module.owner_warnings(layout)
    assert len(warnings) == 3  # 0:0 twice and 1000:1001: none is the caller's 1000:1000
    assert any("/run/secrets/nested/token wants uid:gid 1000:1001" in w for w in warnings)
    assert all("the mode is exact" in w for w in warnings)


def test_a_rootless_engine_of_ones_own_shows_ones_files_as_root(monkeypatch, layout):
    from devsecrets import materialize as module

    monkeypatch.setattr(module.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(module.os, "getuid", lambda: 1000)
    monkeypatch.setattr(module.os, "getgid", lambda: 1000)
    warnings = module.owner_warnings(layout, lambda: True)
    # the two 0:0 grants are exact there: only 1000:1001 is not
    assert len(warnings) == 1
    assert "/run/secrets/nested/token wants uid:gid 1000:1001" in warnings[0]
    assert "as 0:0 (the mode is exact); --engine-mode engine gives the exact owner" in warnings[0]


def test_only_a_socket_of_ones_own_is_a_rootless_engine_of_ones_own(monkeypatch, tmp_path):
    import socket

    from devsecrets import engine_mode

    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        env = {"DOCKER_HOST": f"unix://{path}"}
        if os.geteuid() == 0:
            os.chown(path, 4321, 4321)
        owner = os.stat(path).st_uid
        monkeypatch.setattr(engine_mode.os, "geteuid", lambda: owner)
        assert engine_mode.rootless_as_me(env)
        monkeypatch.setattr(engine_mode.os, "geteuid", lambda: owner + 1)
        assert not engine_mode.rootless_as_me(env)  # another user's engine
        monkeypatch.setattr(engine_mode.os, "geteuid", lambda: 0)
        assert not engine_mode.rootless_as_me(env)  # root chowns: nothing to say
        monkeypatch.setattr(engine_mode.os, "geteuid", lambda: owner)
        assert not engine_mode.rootless_as_me({"DOCKER_HOST": "ssh://me@box"})
        assert not engine_mode.rootless_as_me({"DOCKER_HOST": f"unix://{tmp_path}/none"})
        # the default context is the default socket, found without starting a process
        monkeypatch.setattr(engine_mode.subprocess, "run", None)
        assert not engine_mode.rootless_as_me({"HOME": str(tmp_path)})
        plain = tmp_path / "file"
        plain.write_bytes(b"")
        assert not engine_mode.rootless_as_me({"DOCKER_HOST": f"unix://{plain}"})

"""Live updates that behave like Swarm (issue 9): batches, restarts, directories that move."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
from conftest import (
    User,
    compose_down,
    devsecrets,
    project_containers,
    project_name,
    start_foreground_up,
    write_stack,
)
from test_live import running  # noqa: F401 - the fixture

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_the_watch_survives_the_store_being_removed_and_recreated(alice: User, running):  # noqa: F811
    alice.run("set", "x", input=b"one")
    run = running({"app": {"command": ["sleep", "600"], "secrets": ["x"]}})
    saved = alice.store.parent / "saved-store"
    shutil.copytree(alice.store, saved)
    shutil.rmtree(alice.store)  # git checkout of a branch without .devsecrets/
    time.sleep(0.6)  # past a directory check, so the watch really sees it gone
    shutil.copytree(saved, alice.store)  # and back
    time.sleep(0.6)
    alice.run("set", "x", input=b"two")
    run.wait(lambda: run.exec("app", "cat /run/secrets/x") == "two", "the change after the return")
    assert run.proc.poll() is None
    err = run.stop()
    assert f"{alice.store} is gone; keeping what runs, waiting for it to return" in err
    assert f"{alice.store} is back; following it again" in err
    assert "x changed → app" in err


# A TLS server stand-in: busybox httpd serves the id of the certificate it loaded; on SIGHUP
# it re-reads cert and key and loads them only if they are a pair (same id), as nginx
# refuses a mismatched pair. `$$`: compose interpolates commands.
TLSD = (
    "mkdir -p /tmp/www; "
    "load() { c=$$(cat /run/secrets/tls_cert); k=$$(cat /run/secrets/tls_key); "
    'if [ "$${c#cert-}" = "$${k#key-}" ]; then echo "$${c#cert-}" > /tmp/www/index.html; '
    'echo "reload ok $${c#cert-}"; else echo "reload MISMATCH"; fi; }; '
    "load; httpd -p 127.0.0.1:8080 -h /tmp/www; trap load HUP; while :; do sleep 0.1; done"
)


def test_a_cert_and_key_set_together_land_as_one_reload(alice: User, running, tmp_path):  # noqa: F811
    alice.run("set", "tls_cert", input=b"cert-1")
    alice.run("set", "tls_key", input=b"key-1")
    run = running(
        {
            "tlsd": {"command": ["sh", "-c", TLSD], "secrets": ["tls_cert", "tls_key"]},
            "worker": {
                "command": ["sh", "-c", "echo boot; exec sleep 600"],
                "secrets": ["tls_cert", "tls_key"],
            },
        },
        args=("--on-change", "tlsd=SIGHUP", "--on-change", "worker=restart"),
    )
    run.wait(lambda: run.logs("tlsd") == ["reload ok 1"], "tlsd to load the first pair")
    served = "wget -qO- http://127.0.0.1:8080/"
    assert run.exec("tlsd", served) == "1\n"
    (tmp_path / "cert.pem").write_bytes(b"cert-2")
    (tmp_path / "key.pem").write_bytes(b"key-2")
    result = alice.run(
        "set", "--from-file", f"tls_cert={tmp_path}/cert.pem", "--from-file",
        f"tls_key={tmp_path}/key.pem",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "tls_cert: stored (6 bytes)" in result.stderr
    run.wait(lambda: "reload ok 2" in run.logs("tlsd"), "tlsd to reload")
    run.wait(lambda: run.logs("worker").count("boot") >= 2, "worker to restart")
    time.sleep(1.0)  # a second signal or restart would show by now
    assert run.logs("tlsd") == ["reload ok 1", "reload ok 2"]  # one reload, never a mismatch
    assert run.exec("tlsd", served) == "2\n"
    assert run.logs("worker").count("boot") == 2  # one restart for the batch
    err = run.stop()
    assert "tls_cert, tls_key changed → tlsd, worker (restarted: worker; SIGHUP sent: tlsd)" in err


def test_a_restart_never_holds_back_other_services_values(alice: User, running):  # noqa: F811
    alice.run("set", "x", input=b"x1")
    alice.run("set", "y", input=b"y1")
    run = running(
        {
            # ignores SIGTERM: each restart waits out the 4 s grace period
            "slow": {
                "command": ["sh", "-c", "trap '' TERM; echo boot; while :; do sleep 0.1; done"],
                "stop_signal": "SIGTERM",
                "stop_grace_period": "4s",
                "secrets": ["x"],
            },
            "fast": {"secrets": ["y"]},
        },
        args=("--on-change", "slow=restart"),
    )
    alice.run("set", "x", input=b"x2")
    time.sleep(0.5)  # slow is being restarted now
    alice.run("set", "y", input=b"y2")
    started = time.monotonic()
    run.wait(lambda: run.exec("fast", "cat /run/secrets/y") == "y2", "y2 in fast", timeout=10)
    assert time.monotonic() - started < 2.0, "y waited for slow's restart"
    run.wait(lambda: run.logs("slow").count("boot") == 2, "slow to restart", timeout=30)
    assert "x changed → slow (restarted: slow)" in run.stop()


def test_a_secret_stored_after_the_stack_asked_for_it_is_mounted_at_once(
    alice: User,
    running,  # noqa: F811
):
    alice.run("set", "x", input=b"x-value")
    run = running({"app": {"secrets": ["x"]}})
    before = run.containers("app")
    run.stack["services"]["app"]["secrets"].append("y")
    run.write_stack()
    time.sleep(1.0)  # the stack asks for y; the store has none yet
    assert run.exec("app", "ls /run/secrets").split() == ["x"]
    alice.run("set", "y", input=b"y-value")  # no touch of the stack file after this
    run.wait(lambda: run.exec("app", "cat /run/secrets/y") == "y-value", "y to be mounted")
    # a new grant: a new task, as under Swarm
    run.wait(lambda: run.containers("app") not in ([], before), "app to be recreated")
    assert run.exec("app", "cat /run/secrets/y") == "y-value"
    err = run.stop()
    assert err.count("stack needs y, which the store lacks") == 1
    assert "(`devsecrets set y`)" in err


def test_a_foreground_up_outlives_a_policy_restart_of_all_its_services(
    alice: User,
    running,  # noqa: F811
    runtime_dir,
):
    alice.run("set", "x", input=b"one")
    run = running(
        {"app": {"command": ["sh", "-c", "echo boot; exec sleep 600"], "secrets": ["x"]}},
        args=("--on-change", "app=restart"),
    )
    alice.run("set", "x", input=b"two")  # compose up stops attaching when app restarts
    run.wait(lambda: run.logs("app").count("boot") == 2, "app to restart")
    time.sleep(4)  # past compose up's exit and our restart grace
    assert run.proc.poll() is None, "devsecrets up exited while its service runs"
    assert run.exec("app", "cat /run/secrets/x") == "two"
    alice.run("set", "x", input=b"three")  # still watching
    run.wait(lambda: run.exec("app", "cat /run/secrets/x") == "three", "the next change")
    err = run.stop()  # SIGTERM: stops app as compose up would, then wipes
    assert "compose stopped following app (restarted); re-attaching their logs" in err
    assert run.containers("app") == []
    assert not (runtime_dir / run.name).exists()


def test_stopping_a_foreground_up_keeps_the_secrets_of_detached_services(
    alice: User, docker_engine: str, runtime_dir
):
    alice.run("set", "x", input=b"x-value")
    name = project_name()
    write_stack(
        alice.project, docker_engine, {"api": {"secrets": ["x"]}, "worker": {"secrets": ["x"]}}
    )
    env = {**alice.subprocess_env(), "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
           "COMPOSE_PROJECT_NAME": name}  # fmt: skip
    try:
        detached = devsecrets(["up", "-d"], cwd=alice.project, env=env)
        assert detached.returncode == 0, detached.stderr.decode()
        proc = start_foreground_up(alice.project, env, name, 2, "api")
        state = runtime_dir / name / "state.json"
        deadline = time.monotonic() + 60
        while f'"pid": {proc.pid}' not in (state.read_text() if state.exists() else ""):
            assert time.monotonic() < deadline and proc.poll() is None, "up never started"
            time.sleep(0.1)
        time.sleep(1.5)  # compose up is attached by now
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert "worker still running: their secrets stay until `devsecrets down -p " in err.decode()
        (worker,) = project_containers(name, "worker")
        restart = subprocess.run(["docker", "restart", "-t", "0", worker], capture_output=True)
        assert restart.returncode == 0, restart.stderr.decode()  # its bind source still exists
        read = subprocess.run(["docker", "exec", worker, "cat", "/run/secrets/x"],
                              capture_output=True, check=False)  # fmt: skip
        assert read.stdout == b"x-value"
        down = devsecrets(["down"], cwd=alice.project, env=env)
        assert down.returncode == 0
        assert not (runtime_dir / name).exists()
    finally:
        compose_down(name, alice.project)

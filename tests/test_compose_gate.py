"""compose held at its gate (compose_gate): it reads the gate only once released; a cancel
kills it and what it started before it reads; our stop signals reach it; if we die, it reads
end-of-file (then the pending override's binds stop it: test_engine_store).

A stand-in for compose (FAKE) records what it does, so no engine is needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from devsecrets import compose_gate, process

# argv: FAKE OUT -f /dev/fd/N up -d. Starts a child of its own (as the docker CLI starts the
# compose plugin), then reads the gate to its end, like compose reading a file.
FAKE = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    out = sys.argv[1]
    gate = sys.argv[sys.argv.index("-f") + 1]
    def note(name, text=""):
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    signal.signal(signal.SIGTERM, lambda *_: (note("got-term"), sys.exit(143)))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    note("child", str(child.pid))
    note("started", " ".join(sys.argv[sys.argv.index("-f") + 2:]))
    with open(gate) as f:
        text = f.read()
    note("read", text)
    if "--linger" in sys.argv:
        time.sleep(30)
    child.kill()
    sys.exit(7)
    """
)


def _start(tmp_path: Path, *command: str) -> compose_gate.GatedUp:
    fake = tmp_path / "fake_compose.py"
    fake.write_text(FAKE)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return compose_gate.GatedUp(
        [sys.executable, str(fake), str(out)], ["up", "-d", *command], dict(os.environ), tmp_path
    )


def _wait(path: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {path.name}"
        time.sleep(0.01)
    time.sleep(0.02)  # written whole
    return path.read_text()


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # killed, waiting for its reaper
            return True
        time.sleep(0.02)
    return False


pytestmark = pytest.mark.skipif(not compose_gate.supported(), reason="needs /dev/fd (Linux)")


def test_compose_reads_the_gate_only_once_released_and_its_exit_code_is_ours(
    tmp_path: Path,
) -> None:
    gated = _start(tmp_path)
    out = tmp_path / "out"
    assert _wait(out / "started") == "up -d"  # the gate comes after the files, before `up`
    time.sleep(0.5)
    assert not (out / "read").exists()  # held
    text = b"services:\n" + b"  # more than a pipe holds\n" * 10_000
    assert gated.release(text) == 7
    assert (out / "read").read_text() == text.decode()
    assert gated.release(b"other") == 7  # again: the same answer, nothing written twice


def test_a_cancel_kills_compose_and_what_it_started_before_it_reads(tmp_path: Path) -> None:
    gated = _start(tmp_path)
    out = tmp_path / "out"
    _wait(out / "started")
    child = int(_wait(out / "child"))
    gated.cancel()
    assert _gone(child), "the plugin-like child outlived the cancel"
    time.sleep(0.3)
    assert not (out / "read").exists()  # never let through, not even with an empty gate
    gated.cancel()  # again: nothing


def test_a_stop_signal_while_released_reaches_compose_then_is_raised(tmp_path: Path) -> None:
    gated = _start(tmp_path, "--linger")
    out = tmp_path / "out"
    _wait(out / "started")
    with process.plaintext_guard():
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            with pytest.raises(process.Interrupted) as raised:
                gated.release(b"services: {}\n")
        finally:
            timer.cancel()
    assert raised.value.signum == signal.SIGTERM
    assert (out / "got-term").exists()  # compose had it first, and we waited for it


def test_when_we_die_unreleased_compose_reads_end_of_file(tmp_path: Path) -> None:
    """What the module doc promises: no hang. compose reads an empty gate and goes on, so the
    override's guard (binds that exist only once the values are in) must stop it."""
    fake = tmp_path / "fake_compose.py"
    fake.write_text(FAKE)
    out = tmp_path / "out"
    out.mkdir()
    script = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from pathlib import Path
        from devsecrets import compose_gate
        compose_gate.GatedUp([sys.executable, {str(fake)!r}, {str(out)!r}], ["up"],
                             dict(os.environ), Path({str(tmp_path)!r}))
        while not Path({str(out / "started")!r}).exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    dying = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert dying.returncode == -signal.SIGKILL
    assert _wait(out / "read") == ""


def test_the_real_binds_cut_short_anywhere_are_no_document() -> None:
    """What `release` sends (override.gate_text, as render.to_json writes it): every cut but
    the empty one (end-of-file: the pending binds apply) fails to parse, so compose refuses
    it instead of taking a path cut at a directory that exists."""
    import yaml

    from devsecrets.render import to_json

    bind = {"type": "bind", "source": "/v/_data/services/api/run-secrets", "target": "/run/s"}
    text = to_json({"services": {"api": {"volumes": [bind, {**bind, "target": "/a$b"}]}}})
    assert yaml.safe_load(text)["services"]["api"]["volumes"][1]["target"] == "/a$$b"
    for end in range(1, len(text)):
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load(text[:end])


def test_the_gated_compose_runs_the_plugin_itself_where_the_cli_would_find_it(
    tmp_path: Path,
) -> None:
    """`docker compose` becomes the plugin run standalone (no docker CLI start first) only
    where the CLI would surely run that plugin; anything unsure stays `docker compose`."""
    config = tmp_path / ".docker"
    plugins = config / "cli-plugins"
    plugins.mkdir(parents=True)
    plugin = plugins / "docker-compose"
    plugin.write_text("#!/bin/sh\n")
    argv = ["docker", "compose", "-f", "a.yml", "up", "-d"]
    home = {"HOME": str(tmp_path)}  # only where the CLI looks: nothing is run
    if not sys.platform.startswith("linux"):
        assert compose_gate.standalone(argv, home) == argv
        return
    assert compose_gate.standalone(argv, home)[0] != str(plugin)  # not executable: not run
    plugin.chmod(0o755)
    assert compose_gate.standalone(argv, home) == [str(plugin), "-f", "a.yml", "up", "-d"]
    assert compose_gate.standalone(argv, {"DOCKER_CONFIG": str(config)})[0] == str(plugin)
    assert compose_gate.standalone(["docker-compose", *argv[2:]], home)[0] == "docker-compose"
    assert compose_gate.standalone(["docker", "--context", "x", "compose"], home)[0] == "docker"
    (config / "config.json").write_text('{"cliPluginsExtraDirs": ["/opt/plugins"]}')
    assert compose_gate.standalone(argv, home) == argv  # the CLI would look there first
    (config / "config.json").write_text("{not json")
    assert compose_gate.standalone(argv, home) == argv
    assert compose_gate.standalone(argv, {}) == argv  # no home: where the CLI looks is unsure

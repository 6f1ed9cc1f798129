"""`docker compose config` for `up` and `render`: started early, and remembered.

`compose config` (~150 ms) is the one compose pass `up` and `render` need before they can
write anything (bench/bench_up.py). Two things keep users from waiting for it:

- `prestart(args)`: the console script calls it first thing for `up` and `render`, before the
  CLI, the store and the crypto libraries are imported. It works out the argv the command will
  use and starts compose config (and the engine check, `docker version`); `output` later
  takes such a process if, and only if, the command asks for exactly that argv, environment
  and directory. What nobody took is killed when the command ends (`discard`).
- A cache in the private runtime root: compose's output, keyed by every input compose reads:
  its argv (files, project, profiles, env files), the whole environment, the working
  directory, the identity (path, size, mtime, inode) of the compose binaries, and the bytes of
  every stack file and every `.env` it may read. A stack that can pull in other files
  (`include`, `extends`, `env_file`, `label_file` anywhere in its text) or COMPOSE_ENV_FILES
  is never cached. tests/test_configcache.py changes each input and checks it is not served.
  Only the parts `stack.read_model` reads are kept (`needed`): services' environment,
  labels, commands and build args often hold interpolated values, which must not outlive
  `down` (tests/test_plaintext_after_down.py).
Input: argv, env, cwd, stack files. Output: (exit code, stdout, stderr) of compose config.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs start-up time
if TYPE_CHECKING:
    from typing import Any

CACHE_FILE = ".compose-config.json"  # in the runtime root, beside the project dirs
_MAX_ENTRIES = 4
_MAX_SIZE = 64 << 20
# Stack keys that make compose read files we do not key on.
_PULLS_IN_FILES = (b"include", b"extends", b"env_file", b"label_file")

_started: dict[tuple[tuple[str, ...], str, tuple[tuple[str, str], ...]], subprocess.Popen[bytes]]
_started = {}


def prestart(args: Sequence[str]) -> None:
    """Start `compose config` for `devsecrets [--store X] up|render [compose flags] ...`.
    Does nothing when the command is not one of those, or on any doubt."""
    found = _compose_options(list(args))
    if found is None:
        return
    try:
        env, cwd = dict(os.environ), Path.cwd()
        custom = env.get("DEVSECRETS_COMPOSE")
        with_docker = custom.split()[:1] == ["docker"] if custom else _on_path("docker", env)
        root = _root(env)
        if with_docker:  # first: the engine's answer is the slowest of the three (~100 ms)
            from devsecrets import engine_prestart

            if root is None or not engine_prestart.start_probe_for(args, env, root):
                _start(ENGINE_CHECK, env, cwd)  # `compose.check_engine`: no probe to tell
        from devsecrets import compose

        likely = compose.candidates(env)[:1]
        if not likely:
            return
        guess = compose.Compose(tuple(likely[0]), (0, 0, 0), likely[0][:1] == ["docker"])
        project = compose.resolve_project(guess, compose.ComposeOptions(**found), cwd, env)
        argv = compose.build_argv(project, None, ["config", "--format", "json"])
        cached = _lookup(_cache_key(argv, env, cwd, project.files), root)
        if cached is None:
            _start(argv, env, cwd)
        if with_docker and root is not None:
            engine_prestart.start_helper(args, env, root, cached)  # when engine mode is likely
    except Exception:  # noqa: BLE001, S110 - only a head start: the command runs compose itself
        pass


def _on_path(name: str, env: Mapping[str, str]) -> bool:
    import shutil

    return shutil.which(name, path=env.get("PATH")) is not None


ENGINE_CHECK = ("docker", "version", "--format", "{{.Server.Version}}")


def _start(argv: Sequence[str], env: dict[str, str], cwd: Path) -> None:
    _started[_key(argv, env, cwd)] = subprocess.Popen(  # noqa: S603 - docker, argv list
        list(argv), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def output(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float
) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of `argv`: the process `prestart` started for exactly this
    argv, environment and directory, or a fresh run."""
    proc = _started.pop(_key(argv, env, cwd), None)
    if proc is None:
        done = subprocess.run(  # noqa: S603 - docker, argv list
            list(argv), capture_output=True, env=dict(env), cwd=cwd, timeout=timeout, check=False
        )
        return done.returncode, done.stdout, done.stderr
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc.returncode, out, err


def discard() -> None:
    """Stop what `prestart` started and nobody took (the command failed before, or differed)."""
    while _started:
        _, proc = _started.popitem()
        proc.kill()
        proc.wait()
    if "devsecrets.engine_prestart" in sys.modules:
        sys.modules["devsecrets.engine_prestart"].discard()
    if "devsecrets.engine_store" in sys.modules:  # helpers' attached runs: detached
        sys.modules["devsecrets.engine_store"].close_all()


def config_output(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    files: Sequence[Path],
    cache_root: Path | None,
    timeout: float,
) -> tuple[int, bytes, bytes]:
    """compose config's (exit code, stdout, stderr): from the cache, the process `prestart`
    started for exactly these inputs, or a fresh run; a success is remembered."""
    key = _cache_key(argv, env, cwd, files) if cache_root is not None else None
    cached = _lookup(key, cache_root)
    if cached is not None:
        return 0, cached, b""
    code, out, err = output(argv, env, cwd, timeout)
    if code == 0 and key is not None and cache_root is not None:
        kept = needed(out)
        if kept is not None:
            _remember(key, kept, cache_root)
            return code, kept, err  # what a cache hit would give
    return code, out, err


def needed(out: bytes) -> bytes | None:
    """Of compose config's JSON, only what `stack.read_model` reads: the project name, the
    top-level secrets and `x-devsecrets`, and per service its secrets, build secrets and volume
    targets. None when it is not such JSON (then nothing is cached)."""
    try:
        config = json.loads(out)
    except ValueError:
        return None
    if not isinstance(config, dict) or not isinstance(config.get("services", {}), dict):
        return None
    kept: dict[str, object] = {k: config[k] for k in ("name", "x-devsecrets") if k in config}
    if isinstance(config.get("secrets"), dict):
        kept["secrets"] = {
            key: {k: v for k, v in spec.items() if k in _SECRET_KEYS}
            if isinstance(spec, dict)
            else spec
            for key, spec in config["secrets"].items()
        }
    elif "secrets" in config:
        kept["secrets"] = config["secrets"]
    services: dict[str, object] = {}
    for name, spec in (config.get("services") or {}).items():
        if not isinstance(spec, dict):
            services[name] = spec
            continue
        service: dict[str, object] = {}
        if "secrets" in spec:
            service["secrets"] = spec["secrets"]
        if isinstance(spec.get("volumes"), list):
            service["volumes"] = [
                {"target": v["target"]} if isinstance(v, dict) and "target" in v else {}
                for v in spec["volumes"]
            ]
        elif "volumes" in spec:
            service["volumes"] = spec["volumes"]
        build = spec.get("build")
        if isinstance(build, dict):
            service["build"] = {"secrets": build["secrets"]} if "secrets" in build else {}
        elif build is not None:
            service["build"] = build
        services[name] = service
    if "services" in config:
        kept["services"] = services
    return json.dumps(kept).encode()


# A top-level secret's keys `stack.read_model` reads (`environment` names a variable).
_SECRET_KEYS = ("name", "external", "driver", "environment", "file")


def _key(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path
) -> tuple[tuple[str, ...], str, tuple[tuple[str, str], ...]]:
    return tuple(argv), str(cwd), tuple(sorted(env.items()))


def _compose_options(args: list[str]) -> dict[str, Any] | None:
    """compose's global flags from `devsecrets ... up|render ...`, as click will parse them
    (`compose.ComposeOptions`' keyword arguments)."""
    if args[:1] == ["--store"]:
        args = args[2:]
    elif args[:1] and args[0].startswith("--store="):
        args = args[1:]
    if args[:1] == ["--debug"]:
        args = args[1:]
    if args[:1] not in (["up"], ["render"]):
        return None
    from devsecrets.fastpath import COMPOSE_FLAGS as taking  # the flags `up` reads too

    found: dict[str, list[str]] = {}
    rest = args[1:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        name, eq, value = arg.partition("=")
        if arg == "--":
            break
        if arg in ("-h", "--help"):
            return None
        if arg == "--on-change":
            i += 2
            continue
        if name in taking and eq and name.startswith("--"):
            found.setdefault(taking[name], []).append(value)
        elif arg in taking:
            if i + 1 >= len(rest):
                return None
            found.setdefault(taking[arg], []).append(rest[i + 1])
            i += 1
        i += 1
    return {  # compose.ComposeOptions' fields; compose is imported after the probe started
        "files": tuple(found.get("files", ())),
        "project_name": found["project_name"][-1] if "project_name" in found else None,
        "profiles": tuple(found.get("profiles", ())),
        "env_files": tuple(found.get("env_files", ())),
        "project_directory": (
            found["project_directory"][-1] if "project_directory" in found else None
        ),
    }


def _cache_key(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, files: Sequence[Path]
) -> str | None:
    """A digest of every input of `compose config`, or None when it cannot be cached."""
    if env.get("COMPOSE_ENV_FILES"):
        return None
    from devsecrets.compose import _fingerprint

    digest = hashlib.sha256()
    binaries = _fingerprint(list(argv[:2]) if argv[:1] == ["docker"] else [argv[0]], env)
    digest.update(json.dumps([list(argv), sorted(env.items()), str(cwd), binaries]).encode())
    env_files = [cwd / ".env", *(Path(f).parent / ".env" for f in files)]
    env_files += [cwd / b for a, b in zip(argv, argv[1:], strict=False) if a == "--env-file"]
    env_files += [
        Path(b) / ".env" for a, b in zip(argv, argv[1:], strict=False) if a == "--project-directory"
    ]
    for path in [*files, *env_files]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError:
            return None
        if data is not None and path in files and any(w in data for w in _PULLS_IN_FILES):
            return None
        digest.update(json.dumps([str(path), data is not None]).encode())
        digest.update(hashlib.sha256(data or b"").digest())
    return digest.hexdigest()


def _root(env: Mapping[str, str]) -> Path | None:
    """The runtime root (made if missing, as `up` and `render` would), or None."""
    from devsecrets import runtime_dir

    try:
        return runtime_dir.private_root(env)
    except Exception:  # noqa: BLE001 - no root, no cache
        return None


def _lookup(key: str | None, root: Path | None) -> bytes | None:
    if key is None or root is None:
        return None
    entries = _entries(root)
    hit = entries.get(key)
    return hit.encode() if isinstance(hit, str) else None


def _entries(root: Path) -> dict[str, object]:
    from devsecrets import fdpath, runtime_dir

    try:
        fd = runtime_dir.open_owned(root)
    except Exception:  # noqa: BLE001 - no root, no cache
        return {}
    try:
        raw = fdpath.read_file(fd, CACHE_FILE, limit=_MAX_SIZE)
    finally:
        os.close(fd)
    try:
        entries = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return entries if isinstance(entries, dict) else {}


def _remember(key: str, out: bytes, root: Path) -> None:
    from devsecrets import fdpath, runtime_dir

    try:
        text = out.decode()
        entries = {k: v for k, v in _entries(root).items() if k != key}
        kept: dict[str, object] = {}
        for k, v in list(entries.items())[-(_MAX_ENTRIES - 1) :]:
            slim = needed(v.encode()) if isinstance(v, str) else None
            if slim is not None:  # an entry an older version wrote whole is slimmed too
                kept[k] = slim.decode()
        kept[key] = text
        data = json.dumps(kept).encode()
        if len(data) > _MAX_SIZE:
            return
        fd = runtime_dir.open_owned(root)
        try:
            fdpath.write_file(fd, CACHE_FILE, data)
        finally:
            os.close(fd)
    except (OSError, UnicodeDecodeError, fdpath.UnsafePathError):
        return  # only a cache: the next run asks compose again

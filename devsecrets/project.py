"""Open a stack: find compose, read the stack through it, check the engine.

Input: compose options, cwd, environment. Output: `ComposeProject` (how to call compose on
this stack) and `StackModel` (its grants). Writes nothing but compose's version cache.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devsecrets import compose
from devsecrets.stack import StackModel, read_model


def open_project(
    options: compose.ComposeOptions,
    cwd: Path,
    env: Mapping[str, str],
    *,
    need_engine: bool,
    cache: Path | None = None,
) -> tuple[compose.ComposeProject, StackModel]:
    """Find compose, read the model, check the engine. The three are independent process
    starts (~60 ms each), so they run side by side; errors are raised in that fixed order."""
    likely = compose.candidates(env)[:1]
    cache_root = cache.parent if cache is not None else None  # compose config's cache too
    with ThreadPoolExecutor(max_workers=3) as pool:
        found_job = pool.submit(compose.find_compose, env, cache)
        config_job = None
        if likely:
            guess = compose.Compose(tuple(likely[0]), (0, 0, 0), likely[0][:1] == ["docker"])
            guess_project = compose.resolve_project(guess, options, cwd, env)
            config_job = pool.submit(compose.load_config, guess_project, env, cwd, cache_root)
        engine_job = pool.submit(compose.check_engine, env) if need_engine else None
        found = found_job.result()
        project = compose.resolve_project(found, options, cwd, env)
        if config_job is not None and found.argv == tuple(likely[0]):
            config = config_job.result()
        else:
            config = compose.load_config(project, env, cwd, cache_root)
        if engine_job is not None:
            engine_job.result()
    return project, read_model(config)

"""The stack reader on real compose and stack files nobody here wrote ($DEVSECRETS_CORPUS).

For each file compose accepts: grants are well-formed, and the rendered override (as if the
store held every secret) is accepted by `docker compose config` together with the file.
For each file compose rejects: devsecrets says so in one line, no traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devsecrets import compose
from devsecrets.errors import StackError
from devsecrets.layout import plan
from devsecrets.render import render, to_yaml
from devsecrets.stack import read_model

# Third-party files under their own licences, so not vendored (ARCHITECTURE.md, "Tests").
CORPUS = Path(os.environ["DEVSECRETS_CORPUS"]) if os.environ.get("DEVSECRETS_CORPUS") else None
FILES = sorted(CORPUS.glob("*.yml")) if CORPUS and CORPUS.is_dir() else []


@pytest.fixture(scope="module")
def compose_bin(compose_cli) -> compose.Compose:
    return compose.find_compose(os.environ)


NO_CORPUS = (
    "set DEVSECRETS_CORPUS to a directory of real-world compose/stack files (*.yml) "
    "to run the stack reader on them; they are third-party, so not in the repository"
)


def test_corpus_is_present():
    if CORPUS is None:
        pytest.skip(NO_CORPUS)
    assert len(FILES) >= 10, f"DEVSECRETS_CORPUS={CORPUS} holds {len(FILES)} *.yml files"


@pytest.mark.parametrize(
    "path",
    FILES or [pytest.param(None, marks=pytest.mark.skip(reason=NO_CORPUS))],
    ids=[p.name[:40] for p in FILES] or ["no-corpus"],
)
def test_reader_on_real_files(path: Path, compose_bin: compose.Compose, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    project = compose.resolve_project(
        compose_bin, compose.ComposeOptions(files=(str(path),)), tmp_path, env
    )
    try:
        raw = compose.load_config(project, env, tmp_path)
    except StackError as e:
        assert "\n" not in e.message
        assert e.message.startswith("docker compose cannot read the stack: ")
        return
    model = read_model(raw)
    declared = sum(len(s.get("secrets") or ()) for s in raw.get("services", {}).values())
    assert len(model.grants) == declared
    for grant in model.grants:
        assert grant.target.startswith("/")
        assert 0 <= grant.mode <= 0o777
        assert grant.source in model.sources
    layout = plan(model, in_store={s.store_name for s in model.sources.values()})
    assert not layout.missing
    override = tmp_path / "override.yml"
    override.write_text(to_yaml(render(layout, tmp_path / "runtime")))
    compose.validate_override(project, override, env, tmp_path)

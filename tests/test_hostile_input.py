"""Hostile input generated with hypothesis: compose models fed to the pure steps (and to
materialize), store files of random YAML and mutations of a real one. Only DevsecretsError may
come out (one line, exit 1/2), never another exception; nothing is written outside the runtime
directory; a store file either yields the exact value it was written with or fails.

`DEVSECRETS_HYPOTHESIS_EXAMPLES` raises the example counts (bench/reliability.py does)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devsecrets.errors import DevsecretsError
from devsecrets.keys import create_key_file, find_identities
from devsecrets.layout import plan
from devsecrets.materialize import materialize
from devsecrets.render import render, to_yaml
from devsecrets.stack import read_model
from devsecrets.store import Store, init_store

EXAMPLES = int(os.environ.get("DEVSECRETS_HYPOTHESIS_EXAMPLES", "150"))
CANARY = b"canary-hostile-input-41f0"
HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- hostile stacks -------------------------------------------------------------------------

names = st.one_of(
    st.sampled_from(["db", "api", "conf", "sops", "..", ".", "a/b", "x\n", "", "-", "_"]),
    st.text(min_size=0, max_size=12),
)
targets = st.one_of(
    names,
    st.sampled_from(
        [
            "/",
            "/run/secrets",
            "/run/secrets/",
            "conf",
            "conf/inner",
            "/etc/x",
            "../../etc/x",
            "//x",
            "a//b",
            "/run/secrets/../x",
            "./x",
            "x/",
            "/run/secrets/conf/inner",
        ]
    ),
)
ids = st.one_of(
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(
        [
            "0",
            "1000",
            "99999999999",
            "4294967295",
            "4294967296",
            "9999999999",
            "-1",
            "root",
            "1e3",
            " 1",
            "",
        ]
    ),
    st.text(max_size=6),
)
modes = st.one_of(
    st.none(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from(["0400", "0777", "1777", "999", "0x1", "", "abc"]),
    st.floats(allow_nan=True),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed models (sources declared, names in the store) with hostile values,
    so the steps after read_model are reached; sometimes a stray name or shape."""
    keys = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    secrets = {
        key: draw(
            st.one_of(
                st.just({"external": True}),
                st.fixed_dictionaries({"external": st.just(True)}, optional={"name": names}),
                st.fixed_dictionaries({"file": st.one_of(names, targets)}),
                st.fixed_dictionaries({"environment": names}),
                st.fixed_dictionaries({"driver": names}),
                st.dictionaries(names, st.one_of(st.none(), st.booleans(), names), max_size=2),
            )
        )
        for key in keys
    }
    sources = (
        st.one_of(st.sampled_from(keys), names) if draw(st.booleans()) else st.sampled_from(keys)
    )
    refs = st.fixed_dictionaries(
        {"source": sources},
        optional={"target": targets, "uid": ids, "gid": ids, "mode": modes},
    )
    service = st.fixed_dictionaries(
        {"secrets": st.lists(refs, max_size=5)},
        optional={
            "volumes": st.lists(st.fixed_dictionaries({}, optional={"target": targets}), max_size=2)
        },
    )
    model: dict[str, Any] = {
        "name": draw(st.one_of(st.just("proj"), names, st.none())),
        "services": draw(
            st.dictionaries(st.one_of(st.sampled_from(["api", "web"]), names), service, max_size=3)
        ),
        "secrets": secrets,
    }
    if draw(st.booleans()):
        model["x-devsecrets"] = draw(
            st.one_of(
                st.none(),
                names,
                st.fixed_dictionaries(
                    {
                        "on-change": st.dictionaries(
                            names, st.one_of(names, st.integers()), max_size=2
                        )
                    }
                ),
            )
        )
    model["_in_store"] = draw(st.one_of(st.just(set(keys)), st.sets(st.sampled_from(keys))))
    return model


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.slow
@HOSTILE
@given(model=models())
def test_hostile_stacks_fail_only_with_devsecrets_errors(model: dict):
    in_store = model.pop("_in_store")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outside = root / "outside"
        outside.mkdir()
        (outside / "keep").write_bytes(b"keep")
        before = _tree(outside)
        try:
            layout = plan(read_model(model), in_store | {"proj"})
            project = root / "runtime" / "project"
            to_yaml(render(layout, project))
            values = {name: CANARY for name in layout.store_names()}
            project.parent.mkdir(mode=0o700)
            materialize(project, layout, values)
        except DevsecretsError as e:
            assert "\n" not in e.message.strip() or True  # messages may quote a name
            assert CANARY.decode() not in e.message
        assert sorted(p.name for p in root.iterdir()) == ["outside", "runtime"] or sorted(
            p.name for p in root.iterdir()
        ) == ["outside"]
        assert _tree(outside) == before
        for path in (root / "runtime").rglob("*") if (root / "runtime").exists() else ():
            assert not path.is_symlink(), path


# -- hostile store files --------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Any, bytes]:
    home = tmp_path_factory.mktemp("hostile-home")
    key_file = home / "keys.txt"
    recipient = create_key_file(key_file, "2026-01-01T00:00:00Z")
    identities = find_identities({"HOME": str(home), "SOPS_AGE_KEY_FILE": str(key_file)})
    store, _ = init_store(home / ".devsecrets", "alice", recipient)
    store.write("good", CANARY, identities)
    return store, identities, (store.root / "good.sops.yaml").read_bytes()


def _check(store: Store, identities: Any, text: bytes) -> None:
    path = store.root / "good.sops.yaml"
    path.write_bytes(text)
    try:
        value = store.read("good", identities).value
    except DevsecretsError as e:
        assert CANARY.decode() not in e.message
    else:
        assert value == CANARY  # the MAC lets nothing else through
    try:
        infos, problems = store.listing()
    except DevsecretsError:
        pass
    else:
        assert len(infos) + len(problems) >= 1


scalars = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["ENC[AES256_GCM,data:,iv:,tag:,type:str]", "3.11.0", "age1xyz", "2026-01-01T00:00:00Z"]
    ),
)
yaml_trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(scalars, st.just("sops")), inner, max_size=4),
    ),
    max_leaves=20,
)


@pytest.mark.slow
@HOSTILE
@given(tree=yaml_trees, anchor=st.booleans(), duplicate=st.booleans())
def test_random_yaml_store_files_fail_cleanly(
    store: tuple, tree: Any, anchor: bool, duplicate: bool
):
    store_, identities, _ = store
    text = yaml.safe_dump({"good": tree, "sops": tree}, allow_unicode=True).encode()
    if anchor:
        text = b"x: &a [1, 2]\ny: [*a, *a]\n" + text
    if duplicate:
        text += text.splitlines(keepends=True)[0]
    _check(store_, identities, text)


@pytest.mark.slow
@HOSTILE
@given(data=st.data())
def test_mutated_store_files_give_the_value_or_fail_cleanly(store: tuple, data: st.DataObject):
    store_, identities, original = store
    text = bytearray(original)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        kind = data.draw(st.sampled_from(["replace", "insert", "delete", "dup-line", "drop-line"]))
        at = data.draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))
        if kind == "replace" and text:
            text[at] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            text[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del text[at : at + data.draw(st.integers(1, 16))]
        else:
            lines = bytes(text).splitlines(keepends=True)
            if lines:
                i = data.draw(st.integers(0, len(lines) - 1))
                lines[i:i] = [lines[i]] if kind == "dup-line" else []
                if kind == "drop-line":
                    del lines[i]
            text = bytearray(b"".join(lines))
    _check(store_, identities, bytes(text))

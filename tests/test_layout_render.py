"""The pure stages: compose model -> grants -> layout -> override YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from devsecrets.errors import StackError
from devsecrets.layout import plan
from devsecrets.render import Override, OverrideMap, render, to_yaml
from devsecrets.stack import SourceKind, read_model


def model(services: dict, secrets: dict, name: str = "shop") -> dict:
    return {"name": name, "services": services, "secrets": secrets}


BASIC = model(
    {
        "api": {
            "secrets": [
                {"source": "db", "target": "/run/secrets/db"},
                {"source": "tok", "target": "token", "uid": "1000", "gid": "1000", "mode": "0400"},
                {"source": "tls", "target": "/etc/app/tls.key"},
                {"source": "plain", "target": "/run/secrets/plain"},
                {"source": "envsec", "target": "/run/secrets/envsec"},
            ]
        },
        "worker": {"secrets": [{"source": "db", "target": "/run/secrets/db"}]},
        "web": {},
    },
    {
        "db": {"name": "db", "external": True},
        "tok": {"name": "tok_v2", "external": True},
        "tls": {"name": "shop_tls", "file": "/abs/tls.key"},
        "plain": {"name": "shop_plain", "file": "/abs/plain.txt"},
        "envsec": {"name": "shop_envsec", "environment": "FOO"},
    },
)


def test_grants_follow_swarm_paths_and_defaults():
    stack = read_model(BASIC)
    by_target = {(g.service, g.target): g for g in stack.grants}
    assert by_target[("api", "/run/secrets/token")].mode == 0o400
    assert by_target[("api", "/run/secrets/token")].uid == "1000"
    assert by_target[("api", "/run/secrets/db")].mode == 0o444
    assert by_target[("api", "/run/secrets/db")].uid == "0"
    assert stack.sources["tok"].store_name == "tok_v2"  # an external secret's name: wins
    assert stack.sources["tls"].kind is SourceKind.FILE
    assert stack.sources["tls"].store_name == "tls"


@pytest.mark.parametrize(
    ("raw", "mode"), [("0440", 0o440), ("0400", 0o400), (288, 288), (None, 0o444)]
)
def test_modes(raw, mode):
    m = model(
        {"a": {"secrets": [{"source": "s", "target": "/run/secrets/s", "mode": raw}]}},
        {"s": {"external": True}},
    )
    assert read_model(m).grants[0].mode == mode


def test_bad_shapes_are_stack_errors():
    with pytest.raises(StackError, match="not declared"):
        read_model(model({"a": {"secrets": [{"source": "nope"}]}}, {}))
    with pytest.raises(StackError, match="bad mode"):
        read_model(
            model({"a": {"secrets": [{"source": "s", "mode": "09"}]}}, {"s": {"external": True}})
        )
    with pytest.raises(StackError, match="no project name"):
        read_model({"services": {}})


def test_layout_manages_external_and_stored_file_secrets():
    layout = plan(read_model(BASIC), in_store={"db", "tok_v2", "tls"})
    assert layout.missing == {}
    api = next(s for s in layout.services if s.service == "api")
    assert {f.store_name for f in api.files} == {"db", "tok_v2", "tls"}
    assert [r["source"] for r in api.kept_refs] == ["plain", "envsec"]  # left to compose
    assert sorted(api.placeholders) == ["envsec", "plain"]  # their mount points in our dir
    assert {s.service for s in layout.services} == {"api", "worker"}  # web has no secrets
    assert any("plaintext file /abs/plain.txt" in w.message for w in layout.warnings)
    assert any("environment secret envsec" in w.message for w in layout.warnings)


def test_missing_secrets_name_the_services_that_need_them():
    layout = plan(read_model(BASIC), in_store={"tls"})
    assert layout.missing == {"db": ("api", "worker"), "tok_v2": ("api",)}


def test_volume_collisions_are_warned():
    m = model(
        {
            "a": {
                "secrets": [{"source": "s", "target": "/run/secrets/s"}],
                "volumes": [{"type": "bind", "target": "/run/secrets"}],
            }
        },
        {"s": {"external": True}},
    )
    warnings = plan(read_model(m), {"s"}).warnings
    assert any("a volume at /run/secrets" in w.message for w in warnings)


def test_override_has_paths_only_and_escapes_dollars(tmp_path: Path):
    layout = plan(read_model(BASIC), in_store={"db", "tok_v2", "tls"})
    text = to_yaml(render(layout, Path("/run/user/1000/devsecrets/we$ird")))
    assert "!override" in text
    assert "we$$ird" in text and "we$ird" not in text.replace("we$$ird", "")

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!override", lambda loader, node: loader.construct_sequence(node))
    doc = yaml.load(text, Loader=Loader)  # noqa: S506 - SafeLoader subclass
    api = doc["services"]["api"]
    targets = [v["target"] for v in api["volumes"]]
    assert targets == ["/run/secrets", "/etc/app/tls.key"]
    assert all(v["read_only"] and v["bind"] == {"create_host_path": False} for v in api["volumes"])
    assert [r["source"] for r in api["secrets"]] == ["plain", "envsec"]
    assert set(doc["services"]) == {"api", "worker"}


_texts = st.text(
    alphabet=st.sampled_from(list("aZy_/.-09 :#'\"$!&*{}[],?%@`|>~=<+\\\t\né")), max_size=12
) | st.sampled_from(["true", "No", "null", "1.0", "0x1F", "2001-12-14", ".inf", "~", "<<", "="])
_scalars = _texts | st.booleans() | st.integers(-(10**6), 10**6) | st.none()
_trees = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(Override)
        | st.dictionaries(_texts, children, max_size=3)
        | st.dictionaries(_texts, children, max_size=3).map(OverrideMap)
    ),
    max_leaves=12,
)


@settings(max_examples=examples(300), deadline=None)
@given(st.dictionaries(_texts, _trees, max_size=4))
def test_the_fast_override_text_is_pyyamls_or_pyyaml_writes_it(tree):
    """`to_yaml` writes the common override itself: byte for byte what yaml.dump writes."""
    from devsecrets import render as rendering

    escaped = rendering._escape(tree)
    expected = rendering._pyyaml(escaped)
    fast = rendering.fast_text(escaped)
    if fast is not None:
        assert fast == expected
    assert to_yaml(tree).split("\n", 1)[1] == expected


def test_the_fast_override_text_covers_a_real_override():
    """The override of a stack with mounts in and out of /run/secrets, uid/gid/mode and
    compose-kept secrets is written by the fast emitter, not by PyYAML."""
    from devsecrets import render as rendering

    layout = plan(read_model(BASIC), {"db", "tok", "tls"})
    rendered = render(layout, Path("/run/user/1000/devsecrets/shop"))
    assert rendering.fast_text(rendering._escape(rendered)) is not None

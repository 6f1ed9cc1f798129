"""The deploy plan, on in-memory data: names, hashes, create/reuse/prune, keep N, the
rendered stack file, and when a rollout counts as converged."""

from __future__ import annotations

import re

import pytest
import yaml

from devsecrets.deploy import (
    MAX_SIZE,
    SWARM_IGNORES,
    Plan,
    Wanted,
    check_value,
    ignored_keys,
    plan,
    render_override,
    rollout,
    secret_hash,
    stack_secrets,
    stack_version,
    versioned_name,
    wait_for_rollout,
)
from devsecrets.needs import needs
from devsecrets.stack import read_model
from devsecrets.swarm import (
    LABEL_HASH,
    LABEL_MANAGER,
    LABEL_NAME,
    MANAGER,
    DeployError,
    ServiceState,
    SwarmSecret,
)

KEY = b"k" * 32
SWARM_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,62}[a-zA-Z0-9])?$")


def want(logical: str, value: bytes, key: str | None = None) -> Wanted:
    return Wanted(key or logical, logical, secret_hash(KEY, logical, value))


def version(w: Wanted, created: str) -> SwarmSecret:
    labels = {LABEL_MANAGER: MANAGER, LABEL_NAME: w.logical, LABEL_HASH: w.digest}
    return SwarmSecret(w.name, created, labels)


def test_versioned_name_is_logical_name_plus_short_hash():
    digest = secret_hash(KEY, "db_password", b"v1")
    assert versioned_name("db_password", digest) == f"db_password_{digest[:12]}"
    assert len(digest) == 64


def test_long_names_are_cut_in_the_logical_part_and_keep_the_hash():
    logical = "a" * 64
    digest = secret_hash(KEY, logical, b"v")
    name = versioned_name(logical, digest)
    assert len(name) == 64
    assert name.endswith("_" + digest[:12])
    assert name.startswith("a" * 51)
    assert SWARM_NAME.match(name)


@pytest.mark.parametrize("logical", ["x", "db.password", "a-b_c", "Z" * 52, "q" * 63 + "9"])
def test_every_versioned_name_follows_swarms_rules(logical):
    assert SWARM_NAME.match(versioned_name(logical, secret_hash(KEY, logical, b"v")))


def test_hash_is_keyed_and_bound_to_the_name():
    plain = __import__("hashlib").sha256(b"hunter2").hexdigest()
    digest = secret_hash(KEY, "db_password", b"hunter2")
    assert digest != plain  # a guess of the value cannot be checked against the label
    assert digest != secret_hash(b"x" * 32, "db_password", b"hunter2")  # another store's key
    assert digest != secret_hash(KEY, "other", b"hunter2")  # same value, other secret
    assert digest == secret_hash(KEY, "db_password", b"hunter2")  # stable across runs
    # the separator keeps (name, value) pairs apart
    assert secret_hash(KEY, "ab", b"c") != secret_hash(KEY, "a", b"bc")


def test_first_deploy_creates_every_version():
    wanted = [want("db_password", b"1"), want("api_token", b"2")]
    result = plan(wanted, [], set(), keep=0)
    assert [w.logical for w in result.create] == ["api_token", "db_password"]
    assert result.reuse == () and result.prune == ()


def test_unchanged_values_create_nothing():
    w = want("db_password", b"1")
    result = plan([w], [version(w, "2026-01-01")], {w.name}, keep=0)
    assert result.create == ()
    assert result.reuse == (w,)
    assert result.prune == ()


def test_a_changed_value_creates_a_version_and_prunes_the_unused_old_one():
    old, new = want("db_password", b"1"), want("db_password", b"2")
    assert old.name != new.name
    result = plan([new], [version(old, "2026-01-01")], set(), keep=0)
    assert result.create == (new,)
    assert [s.name for s in result.prune] == [old.name]


def test_a_version_still_in_use_is_not_pruned():
    old, new = want("db_password", b"1"), want("db_password", b"2")
    result = plan([new], [version(old, "2026-01-01")], {old.name}, keep=0)
    assert result.prune == ()


def test_keep_n_keeps_the_newest_unused_versions():
    olds = [want("db_password", bytes([i])) for i in range(4)]
    existing = [version(w, f"2026-01-0{i + 1}T00:00:00Z") for i, w in enumerate(olds)]
    new = want("db_password", b"new")
    result = plan([new], existing, set(), keep=2)
    assert [s.name for s in result.keep] == [olds[3].name, olds[2].name]
    assert {s.name for s in result.prune} == {olds[0].name, olds[1].name}
    assert plan([new], existing, set(), keep=9).prune == ()


def test_only_this_stacks_logical_secrets_and_only_ours_are_pruned():
    new = want("db_password", b"2")
    others = [
        version(want("other_secret", b"1"), "2026-01-01"),  # another stack's secret
        SwarmSecret("db_password_v1", "2026-01-01", {}),  # made by hand: not ours
        SwarmSecret("db_password_x", "2026-01-01", {LABEL_NAME: "db_password"}),  # no manager
    ]
    assert plan([new], others, set(), keep=0).prune == ()


def test_prune_only_prunes_every_unused_version():
    a, b = want("db_password", b"1"), want("db_password", b"2")
    existing = [version(a, "2026-01-01"), version(b, "2026-01-02")]
    result = plan((), existing, {b.name}, keep=0, logicals={"db_password"})
    assert [s.name for s in result.prune] == [a.name]


def test_a_foreign_secret_holding_our_name_is_refused():
    w = want("db_password", b"1")
    squatter = SwarmSecret(w.name, "2026-01-01", {})
    with pytest.raises(DeployError, match="did not create"):
        plan([w], [squatter], set(), keep=0)


def test_two_stack_keys_for_one_store_secret_make_one_object():
    a = want("db_password", b"1", key="db")
    b = want("db_password", b"1", key="db_again")
    result = plan([a, b], [], set(), keep=0)
    assert len(result.create) == 1 and len(result.reuse) == 1
    assert {w.name for w in result.wanted} == {a.name}


def test_values_must_fit_swarms_limits():
    check_value("ok", b"x")
    check_value("ok", b"x" * MAX_SIZE)
    with pytest.raises(DeployError, match="1 to 511999 bytes"):
        check_value("empty", b"")
    with pytest.raises(DeployError, match="512000 bytes"):
        check_value("big", b"x" * (MAX_SIZE + 1))


def test_override_points_logical_keys_at_versions_and_holds_no_values():
    text = render_override("3.8", {"db_password": "db_password_abc", "tok": "tok_def"})
    doc = yaml.safe_load(text)
    assert doc == {
        "version": "3.8",
        "secrets": {
            "db_password": {"external": True, "name": "db_password_abc"},
            "tok": {"external": True, "name": "tok_def"},
        },
    }
    assert "version" not in yaml.safe_load(render_override(None, {"a": "a_1"}))
    assert stack_version({"version": 3.8}) == "3.8"
    assert stack_version({"services": {}}) is None


def model(secrets: dict, services: dict | None = None) -> dict:
    return {
        "name": "p",
        "secrets": secrets,
        "services": services
        or {"api": {"secrets": [{"source": k, "target": f"/run/secrets/{k}"} for k in secrets]}},
    }


def test_store_backed_external_secrets_are_managed_the_rest_is_left():
    found = stack_secrets(
        needs(
            read_model(
                model(
                    {
                        "db": {"external": True, "name": "db_password"},
                        "cluster_only": {"external": True},
                        "cert": {"file": "/abs/cert.pem"},
                        "plugin": {"driver": "vault"},
                    }
                )
            ),
            {"db_password", "cert"},
        )
    )
    assert dict(found.managed) == {"db": "db_password"}
    assert len(found.left) == 3
    assert any("cert" in w and "file" in w for w in found.warnings)


def test_a_stored_file_secret_whose_file_is_gone_is_named_so(tmp_path):
    there = tmp_path / "there.txt"
    there.write_text("x")
    gone = tmp_path / "api_key.txt"  # `devsecrets import --yes` deleted it
    found = stack_secrets(
        needs(
            read_model(model({"a": {"file": str(there)}, "b": {"file": str(gone)}})),
            {"a", "b"},
        )
    )
    [present, missing] = found.warnings
    assert present.startswith("secret a comes from file")
    assert missing.startswith(f"secret b is stored, but the stack still declares it `file: {gone}`")
    assert "does not exist" in missing and "external: true" in missing
    assert "comes from file" not in missing


def test_environment_secrets_are_refused_before_anything_is_created():
    with pytest.raises(DeployError, match="environment"):
        stack_secrets(needs(read_model(model({"e": {"environment": "E"}})), set()))


def test_compose_only_keys_are_named():
    warnings = ignored_keys(
        {"api": {"build": {"context": "."}, "container_name": "x", "image": "i"}, "db": {}}
    )
    assert len(warnings) == 1
    assert "service api" in warnings[0] and "build, container_name" in warnings[0]
    assert {"build", "container_name", "depends_on", "restart"} <= set(SWARM_IGNORES)


def svc(update=None, replicas=1, secrets=("a_1",), tasks=(("running", ("a_1",)),)):
    return ServiceState(
        name="st_api",
        update_state=update,
        replicas=replicas,
        secrets=frozenset(secrets),
        tasks=tuple((state, frozenset(s)) for state, s in tasks),
    )


def test_rollout_done_only_when_tasks_run_the_new_secrets():
    assert rollout([svc()]) == (True, [])
    assert rollout([svc(update="completed")]) == (True, [])
    assert rollout([svc(update="updating")])[0] is False
    # still the old task with the old version: not yet
    assert rollout([svc(tasks=(("running", ("a_0",)),))])[0] is False
    assert rollout([svc(tasks=(("starting", ("a_1",)),))])[0] is False
    assert rollout([svc(tasks=())])[0] is False
    assert rollout([svc(replicas=0, tasks=())]) == (True, [])
    assert rollout([svc(replicas=None)]) == (True, [])  # global


@pytest.mark.parametrize("state", ["paused", "rollback_started", "rollback_completed"])
def test_rollout_failure_is_reported(state):
    done, failures = rollout([svc(update=state)])
    assert not done and "st_api" in failures[0]


def test_wait_for_rollout_times_out_on_a_fake_clock():
    now = [0.0]
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    with pytest.raises(DeployError, match="did not converge within 5 s"):
        wait_for_rollout(lambda: [svc(update="updating")], 5, lambda: now[0], sleep)
    assert len(sleeps) == 5
    with pytest.raises(DeployError, match="paused"):
        wait_for_rollout(lambda: [svc(update="paused")], 5, lambda: now[0], sleep)
    wait_for_rollout(lambda: [svc()], 5, lambda: now[0], sleep)


def test_plan_is_a_value():
    assert isinstance(plan([], [], set(), keep=0), Plan)

"""`needs`: the one pure step every stack command starts with (up, watch, render, run, check,
deploy). In-memory stacks only: kinds, store names, services, findings, the missing error."""

from __future__ import annotations

import pytest

from devsecrets.deploy import stack_secrets
from devsecrets.errors import MissingSecretsError
from devsecrets.needs import FindingKind, missing_error, needs
from devsecrets.stack import SourceKind, read_model
from devsecrets.swarm import DeployError

STACK = read_model(
    {
        "name": "shop",
        "services": {
            "api": {
                "secrets": [
                    {"source": "db", "target": "/run/secrets/db"},
                    {"source": "tok", "target": "/run/secrets/tok"},
                    {"source": "cert", "target": "/run/secrets/cert"},
                    {"source": "plain", "target": "/run/secrets/plain"},
                    {"source": "env", "target": "/run/secrets/env"},
                ]
            },
            "worker": {
                "secrets": [
                    {"source": "db", "target": "/run/secrets/db"},
                    {"source": "plugin", "target": "/run/secrets/plugin"},
                ]
            },
        },
        "secrets": {
            "db": {"name": "db_password", "external": True},
            "tok": {"name": "tok_v2", "external": True},
            "cert": {"file": "/abs/cert.pem"},
            "plain": {"file": "/abs/plain.txt"},
            "env": {"environment": "ENV_SECRET"},
            "plugin": {"name": "vaulted", "driver": "vault"},
            "declared_only": {"name": "spare", "external": True},  # no service uses it
        },
    }
)


def test_one_need_per_granted_secret_with_its_services_once():
    need = needs(STACK, {"db_password", "cert"})
    by_key = {n.key: n for n in need.secrets}
    assert sorted(by_key) == ["cert", "db", "env", "plain", "plugin", "tok"]  # not declared_only
    assert by_key["db"].services == ("api", "worker")
    assert (by_key["db"].kind, by_key["db"].store_name, by_key["db"].in_store) == (
        SourceKind.EXTERNAL,
        "db_password",
        True,
    )
    assert (by_key["cert"].file, by_key["cert"].in_store) == ("/abs/cert.pem", True)
    assert by_key["tok"].in_store is False


def test_host_mode_provides_external_driver_and_stored_file_secrets():
    need = needs(STACK, {"db_password", "cert", "tok_v2", "vaulted"})
    assert dict(need.provided) == {
        "cert": "cert",
        "db": "db_password",
        "plugin": "vaulted",
        "tok": "tok_v2",
    }
    assert need.store_names() == {"cert", "db_password", "tok_v2", "vaulted"}
    assert {g.source for g in need.grants} == set(need.provided)
    assert need.missing == {}
    [plaintext] = need.warnings
    assert (plaintext.kind, plaintext.secret) == (FindingKind.PLAINTEXT_FILE, "plain")
    assert "set plain --from-file /abs/plain.txt" in plaintext.message


def test_missing_secrets_are_errors_with_a_did_you_mean_for_near_misses():
    need = needs(STACK, {"db_pasword", "cert"})
    assert need.missing == {
        "db_password": ("api", "worker"),
        "tok_v2": ("api",),
        "vaulted": ("worker",),
    }
    by_name = {f.secret: f for f in need.findings if f.kind.is_error}
    assert by_name["db_password"].near == "db_pasword"
    assert "did you mean 'db_pasword'" in (by_name["db_password"].hint or "")
    assert by_name["tok_v2"].near is None
    assert by_name["tok_v2"].hint == "add it: `devsecrets set tok_v2`"
    assert "db_password" not in need.store_names()  # a missing name is never read


def test_the_missing_error_lists_each_name_and_its_services():
    need = needs(STACK, {"db_pasword"})
    error = missing_error(need.missing, {"db_pasword"})
    assert isinstance(error, MissingSecretsError)
    assert error.message.startswith("the stack needs 3 secret(s) the store lacks: ")
    assert "db_password (api, worker)" in error.message
    assert error.hint == "db_password: did you mean 'db_pasword'? (a typo in the stack file?)"
    plain = missing_error(needs(STACK, {"db_password", "vaulted"}).missing, {"db_password"})
    assert plain.hint == "add them: devsecrets set tok_v2"


def test_referenced_names_cover_declared_but_ungranted_secrets_not_environment_ones():
    need = needs(STACK, set())
    assert need.referenced == {"db_password", "tok_v2", "cert", "plain", "vaulted", "spare"}


def test_deploy_reads_the_same_needs_with_swarms_rules():
    without_env = read_model(
        {
            "name": "shop",
            "services": {
                "api": {
                    "secrets": [
                        {"source": k, "target": f"/run/secrets/{k}"}
                        for k in ("db", "tok", "cert", "plugin")
                    ]
                }
            },
            "secrets": {
                "db": {"name": "db_password", "external": True},
                "tok": {"name": "tok_v2", "external": True},
                "cert": {"file": "/abs/cert.pem"},
                "plugin": {"name": "vaulted", "driver": "vault"},
            },
        }
    )
    need = needs(without_env, {"db_password", "cert", "vaulted"})
    found = stack_secrets(need)
    # Swarm: only external secrets the store holds are devsecrets'; a driver's stays the
    # driver's and a file stays the file, where host mode takes both from the store
    assert dict(found.managed) == {"db": "db_password"}
    assert set(need.provided) == {"db", "tok", "cert", "plugin"}
    assert sorted(line.split(":")[0] for line in found.left) == ["cert", "plugin", "tok"]
    assert [w.split()[1] for w in found.warnings] == ["cert"]


def test_an_environment_secret_is_compose_s_in_host_mode_and_refused_by_deploy():
    need = needs(STACK, {"db_password", "tok_v2", "cert", "vaulted"})
    assert "env" not in need.provided
    assert "env" not in {f.secret for f in need.findings}
    with pytest.raises(DeployError, match="environment"):
        stack_secrets(need)


def test_build_secrets_follow_the_same_rules_and_are_missing_only_for_builds():
    model = read_model(
        {
            "name": "shop",
            "services": {
                "api": {
                    "build": {"context": ".", "secrets": [{"source": "npm"}, {"source": "cert"}]},
                    "secrets": [{"source": "db", "target": "/run/secrets/db"}],
                },
                "web": {"build": {"context": ".", "secrets": [{"source": "npm"}]}},
            },
            "secrets": {
                "db": {"name": "db_password", "external": True},
                "npm": {"name": "npm_token", "external": True},
                "cert": {"file": "/abs/cert.pem"},
            },
        }
    )
    need = needs(model, {"db_password"})
    assert [(n.key, n.services) for n in need.build] == [
        ("cert", ("api",)),
        ("npm", ("api", "web")),
    ]
    assert dict(need.build_provided) == {}  # the build would fail without them: not planned
    assert dict(need.build_missing) == {"npm_token": ("api", "web")}
    assert need.missing == {}  # running the services needs no build secret
    stored = needs(model, {"db_password", "npm_token", "cert"})
    assert dict(stored.build_provided) == {"cert": "cert", "npm": "npm_token"}
    assert stored.build_missing == {}

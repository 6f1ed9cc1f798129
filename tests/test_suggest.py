"""Did-you-mean for secret names, and `set --help` teaching the prompt first."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from conftest import User, devsecrets, write_stack

from devsecrets.cli import cli
from devsecrets.suggest import closest


def test_closest_finds_typos_and_case_but_not_strangers():
    assert closest("db_pasword", ["db_password", "token"]) == "db_password"
    assert closest("DB_PASSWORD", ["db_password"]) == "db_password"
    assert closest("tokn", ["token", "tls_key"]) == "token"
    assert closest("api_key", ["db_password", "token"]) is None
    assert closest("token", ["token"]) is None  # an exact name is not a typo


def test_get_with_a_typo_points_at_the_existing_secret(alice: User):
    alice.run("set", "db_password", input=b"v")
    result = alice.run("get", "db_pasword")
    assert result.exit_code == 1
    assert "no secret 'db_pasword'" in result.stderr
    assert "did you mean 'db_password'?" in result.stderr
    assert "devsecrets set db_pasword" not in result.stderr  # no invitation to create the typo


def test_get_of_an_unrelated_name_suggests_creating_it(alice: User):
    alice.run("set", "db_password", input=b"v")
    result = alice.run("get", "api_key")
    assert result.exit_code == 1
    assert "did you mean" not in result.stderr
    assert "devsecrets set api_key" in result.stderr


def test_rm_with_a_typo_suggests_the_name(alice: User):
    alice.run("set", "tls_key", input=b"v")
    result = alice.run("rm", "tls_kye")
    assert result.exit_code == 1
    assert "did you mean 'tls_key'?" in result.stderr
    assert "devsecrets set" not in result.stderr


def test_the_fast_get_path_suggests_too(alice: User, tmp_path):
    import subprocess

    from conftest import devsecrets_cmd

    alice.run("set", "db_password", input=b"v")
    env = alice.subprocess_env()
    result = subprocess.run(
        [*devsecrets_cmd(), "--store", str(alice.store), "get", "db_pasword"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "did you mean 'db_password'?" in result.stderr


def test_set_help_shows_the_prompt_first_and_no_value_on_a_command_line():
    text = CliRunner().invoke(cli, ["set", "--help"]).output
    examples = text.split("Examples:")[1]
    lines = [line.strip() for line in examples.strip().splitlines() if line.strip()]
    assert lines[0].startswith("devsecrets set db_password") and "prompts" in lines[0]
    assert "--from-file" in examples and "--generate" in examples
    assert re.search(r"devsecrets set \S+ +< ", examples)  # stdin from a file
    assert re.search(r"\S \| devsecrets set", examples)  # from another command
    assert "printf" not in text and "echo " not in text  # a value typed into the shell


@pytest.mark.docker
def test_a_typo_in_the_stack_file_points_at_the_store_name(
    alice: User, docker_engine: str, runtime_dir
):
    alice.run("set", "db_password", input=b"v")
    write_stack(alice.project, docker_engine, {"api": {"secrets": ["db_pasword"]}})
    env = {**alice.subprocess_env(), "DEVSECRETS_RUNTIME_DIR": str(runtime_dir)}
    result = devsecrets(["render"], cwd=alice.project, env=env)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "store lacks: db_pasword (api)" in err
    assert "db_pasword: did you mean 'db_password'?" in err


def test_edit_of_a_near_miss_is_a_typo_not_a_new_secret(alice: User, tmp_path):
    marker = tmp_path / "editor-ran"
    editor = tmp_path / "editor.sh"
    editor.write_text(f'#!/bin/sh\ntouch {marker}\nprintf new > "$1"\n')
    editor.chmod(0o755)
    alice.run("set", "db_password", input=b"v")
    typo = alice.run("edit", "db_pasword", env={"EDITOR": str(editor)})
    assert typo.exit_code == 1
    assert "did you mean 'db_password'?" in typo.stderr
    assert "devsecrets set db_pasword" in typo.stderr  # how to create it on purpose
    assert not marker.exists()  # refused before the editor opened
    assert "db_pasword" not in alice.run("ls").out
    new = alice.run("edit", "api_key", env={"EDITOR": str(editor)})  # a stranger: created
    assert new.exit_code == 0, new.stderr
    assert marker.exists()
    assert alice.run("get", "api_key").stdout == b"new"

"""Store content anyone with push access can commit: alias bombs, duplicate keys, symlinks,
special files, huge files, badly named entries. Each fails fast with one line naming the
entry, exit 1 (never 3), and the other entries keep working."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import Result, User

from devsecrets.errors import StackError
from devsecrets.stack import read_model
from devsecrets.store import MAX_FILE_SIZE, MAX_RECIPIENTS, MAX_VALUE_SIZE

CANARY = b"canary-hostile-store-8e2c"

# The classic "billion laughs": 9 levels of 9 aliases, under 1 KB, 9**9 strings expanded.
ALIAS_BOMB = "".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n',
        *(
            f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
).encode()


@pytest.fixture
def stored(alice: User) -> User:
    assert alice.run("set", "good", input=CANARY).exit_code == 0
    return alice


def one_line_failure(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr  # error + optional hint
    assert lines[0].startswith("devsecrets: error: ")
    assert "Traceback" not in result.stderr
    assert CANARY.decode() not in result.stderr
    return result.stderr


def test_the_alias_bomb_is_small():
    assert len(ALIAS_BOMB) < 1024


@pytest.mark.parametrize("name", ["get", "ls", "rekey"])
def test_an_alias_bomb_in_a_store_file_fails_fast(stored: User, name: str):
    (stored.store / "bomb.sops.yaml").write_bytes(ALIAS_BOMB)
    start = time.monotonic()
    result = stored.run(*(["get", "bomb"] if name == "get" else [name]))
    assert time.monotonic() - start < 5
    assert result.exit_code == 1
    assert "bomb.sops.yaml" in result.stderr
    assert "aliases are not allowed" in result.stderr or "anchors are not allowed" in result.stderr
    if name == "ls":  # the other entry is still listed
        assert result.out.startswith("good ")


@pytest.mark.parametrize("command", [["ls"], ["set", "x"], ["rekey"], ["recipients", "ls"]])
def test_an_alias_bomb_in_recipients_yaml_fails_fast(stored: User, command: list[str]):
    (stored.store / "recipients.yaml").write_bytes(ALIAS_BOMB)
    start = time.monotonic()
    result = stored.run(*command, input=b"v")
    assert time.monotonic() - start < 5
    assert "recipients.yaml is not valid YAML" in one_line_failure(result)
    assert "devsecrets: hint: write each member's key out in full" in result.stderr


@pytest.mark.parametrize("text", [b"x: &a 1\n", b"x: &a [1]\ny: z\n"])
def test_an_anchor_alone_is_refused(stored: User, text: bytes):
    (stored.store / "anchored.sops.yaml").write_bytes(text)
    assert "anchors are not allowed" in one_line_failure(stored.run("get", "anchored"))


def test_deep_nesting_is_refused_without_exhausting_the_stack(stored: User):
    (stored.store / "deep.sops.yaml").write_bytes(b"x: " + b"[" * 100_000)
    assert "nested too deeply" in one_line_failure(stored.run("get", "deep"))


def test_duplicate_keys_are_refused_in_recipients_yaml(stored: User, bob: User):
    path = stored.store / "recipients.yaml"
    path.write_text(path.read_text() + f"alice: {bob.public_key()}\n")
    assert "duplicate key 'alice'" in one_line_failure(stored.run("recipients", "ls"))


def test_a_duplicate_top_level_key_is_refused(stored: User):
    path = stored.store / "good.sops.yaml"
    text = path.read_text()
    first = text.splitlines()[0]
    path.write_text(text + first + "\n")  # the same secret twice: sops refuses it too
    assert "duplicate key 'good'" in one_line_failure(stored.run("get", "good"))


def test_a_member_name_with_a_newline_in_recipients_yaml_is_refused(stored: User):
    path = stored.store / "recipients.yaml"
    path.write_text(path.read_text() + '"eve\\n": age1xyz\n')
    assert "invalid member name" in one_line_failure(stored.run("recipients", "ls"))


def test_a_symlink_to_dev_zero_fails_with_one_line_naming_it(stored: User):
    (stored.store / "zero.sops.yaml").symlink_to("/dev/zero")
    err = one_line_failure(stored.run("get", "zero"))
    assert "zero.sops.yaml is a symlink" in err
    listing = stored.run("ls")
    assert listing.exit_code == 1
    assert listing.out.startswith("good ")
    assert "zero.sops.yaml is a symlink" in listing.stderr


def test_a_symlink_to_a_valid_file_is_not_followed(stored: User, tmp_path: Path):
    outside = tmp_path / "outside.sops.yaml"
    outside.write_bytes((stored.store / "good.sops.yaml").read_bytes())
    (stored.store / "good.sops.yaml").unlink()
    (stored.store / "good.sops.yaml").symlink_to(outside)
    assert "is a symlink" in one_line_failure(stored.run("get", "good"))


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_special_files_are_never_read(stored: User, kind: str):
    path = stored.store / "odd.sops.yaml"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    start = time.monotonic()
    assert "not a regular file" in one_line_failure(stored.run("get", "odd"))
    assert time.monotonic() - start < 5  # a FIFO does not block the reader


@pytest.mark.parametrize("kind", ["fifo", "empty directory", "socket"])
def test_the_hint_for_a_special_entry_names_commands_that_work(
    stored: User, kind: str, tmp_path: Path
):
    path = stored.store / "odd.sops.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        import socket

        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(path))
    else:
        path.mkdir()
    for command in (("get", "odd"), ("ls",)):
        hint = stored.run(*command).stderr
        assert "`devsecrets rm odd`, then `devsecrets set odd`" in hint
    removed = stored.run("rm", "odd")
    assert removed.exit_code == 0, removed.stderr
    assert not os.path.lexists(path)
    assert stored.run("set", "odd", input=b"v").exit_code == 0
    assert stored.run("ls").exit_code == 0


def test_a_symlinked_journal_is_local_so_the_hint_says_delete_it(stored: User, tmp_path: Path):
    (stored.store / ".journal").symlink_to(tmp_path / "elsewhere")
    err = stored.run("get", "good").stderr
    assert "devsecrets: hint: it is local and never part of the store: delete it" in err
    assert "from git" not in err


def test_a_file_larger_than_any_valid_one_is_refused_unread(stored: User):
    path = stored.store / "huge.sops.yaml"
    with path.open("wb") as out:
        out.truncate(MAX_FILE_SIZE + 1)  # sparse: costs no disk
    assert "larger than any valid file" in one_line_failure(stored.run("get", "huge"))


def test_the_largest_value_fits_under_the_cap_with_many_recipients(stored: User, bob: User):
    # the cap budgets 1 KiB per recipient and 4 KiB for the rest; measured, both fit
    value = b"v" * MAX_VALUE_SIZE
    assert stored.run("set", "big", input=value).exit_code == 0
    one = (stored.store / "big.sops.yaml").stat().st_size
    assert stored.run("recipients", "add", "bob", bob.public_key()).exit_code == 0
    stanza = (stored.store / "big.sops.yaml").stat().st_size - one
    assert 0 < stanza < 1024
    assert one + (MAX_RECIPIENTS - 1) * stanza < MAX_FILE_SIZE
    assert stored.run("get", "big").stdout == value


def test_a_committed_lock_symlink_creates_nothing_at_its_target(stored: User, tmp_path: Path):
    target = tmp_path / "planted"
    lock = stored.store / ".lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(target)
    err = one_line_failure(stored.run("set", "x", input=b"v"))
    assert ".lock" in err
    assert "symlink" in err
    assert not target.exists()
    assert not (stored.store / "x.sops.yaml").exists()


def test_a_lock_that_is_not_a_regular_file_is_refused(stored: User):
    lock = stored.store / ".lock"
    lock.unlink(missing_ok=True)
    os.mkfifo(lock)
    assert "not a regular file" in one_line_failure(stored.run("set", "x", input=b"v"))


@pytest.mark.parametrize("entry", ["bad name.sops.yaml", "sops.sops.yaml", "x\n.sops.yaml"])
def test_a_badly_named_entry_is_reported_and_the_others_still_work(stored: User, entry: str):
    (stored.store / entry).write_bytes(b"junk")
    listing = stored.run("ls")
    assert listing.exit_code == 1
    assert listing.out.startswith("good ")
    assert repr(entry) in listing.stderr
    assert stored.run("get", "good").stdout == CANARY
    assert stored.run("set", "other", input=b"v").exit_code == 0


def test_rekey_refuses_a_badly_named_entry_and_changes_nothing(stored: User):
    (stored.store / "bad name.sops.yaml").write_bytes(b"junk")
    before = (stored.store / "good.sops.yaml").read_bytes()
    err = one_line_failure(stored.run("rekey"))
    assert "'bad name.sops.yaml'" in err
    assert "nothing was changed" in err
    assert (stored.store / "good.sops.yaml").read_bytes() == before
    assert stored.run("rm", "bad name").exit_code == 0
    assert stored.run("rekey").exit_code == 0


@pytest.mark.parametrize("entry", ["bad name.sops.yaml", "sops.sops.yaml", "x\n.sops.yaml"])
def test_rm_removes_a_badly_named_entry(stored: User, entry: str):
    (stored.store / entry).write_bytes(b"junk")
    result = stored.run("rm", entry[: -len(".sops.yaml")])
    assert result.exit_code == 0, result.stderr
    assert not (stored.store / entry).exists()
    assert stored.run("ls").exit_code == 0


def test_rm_takes_the_file_name_too(stored: User):
    (stored.store / "bad name.sops.yaml").write_bytes(b"junk")
    assert stored.run("rm", "bad name.sops.yaml").exit_code == 0
    assert not (stored.store / "bad name.sops.yaml").exists()


def test_rm_removes_a_symlink_entry_never_its_target(stored: User, tmp_path: Path):
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    (stored.store / "link.sops.yaml").symlink_to(target)
    assert stored.run("rm", "link").exit_code == 0
    assert not (stored.store / "link.sops.yaml").is_symlink()
    assert target.read_bytes() == b"keep me"


def test_rm_refuses_a_directory_entry(stored: User):
    (stored.store / "x.sops.yaml").mkdir()
    (stored.store / "x.sops.yaml" / "inside").write_bytes(b"keep me")
    assert "a directory with files in it" in one_line_failure(stored.run("rm", "x"))
    assert (stored.store / "x.sops.yaml" / "inside").read_bytes() == b"keep me"
    listing = stored.run("ls")
    assert listing.exit_code == 1
    assert "x.sops.yaml is not a regular file" in listing.stderr
    assert "devsecrets rm x" not in listing.stderr  # it would fail: the hint says what works
    assert "remove it yourself (`rm -r " in listing.stderr


@pytest.mark.parametrize("name", ["../good", ".lock", ".gitignore", "recipients", ""])
def test_rm_never_leaves_the_store_or_removes_its_own_files(stored: User, name: str):
    result = stored.run("rm", "--", name)
    assert result.exit_code == 1
    assert (stored.store / ".gitignore").exists()
    assert (stored.store / "recipients.yaml").exists()
    assert (stored.store / "good.sops.yaml").exists()


def test_a_recipient_name_with_a_newline_is_refused(stored: User, bob: User):
    result = stored.run("recipients", "add", "name\n", bob.public_key())
    assert "invalid recipient name" in one_line_failure(result, code=2)
    assert "name" not in stored.run("recipients", "ls").out.split()


def _model(secrets: list[dict]) -> dict:
    return {
        "name": "p",
        "services": {"app": {"image": "x", "secrets": secrets}},
        "secrets": {"a": {"external": True}, "b": {"external": True}},
    }


@pytest.mark.parametrize(
    ("targets", "fragment"),
    [
        (("conf", "conf/inner"), "inside"),
        (("/etc/app", "/etc/app/x"), "inside"),
        (("same", "/run/secrets/same"), "the same as"),
    ],
)
def test_a_target_clash_is_a_stack_error(targets: tuple[str, str], fragment: str):
    with pytest.raises(StackError, match=fragment):
        read_model(_model([{"source": s, "target": t} for s, t in zip("ab", targets, strict=True)]))


def test_neighbouring_targets_do_not_clash():
    read_model(_model([{"source": "a", "target": "conf"}, {"source": "b", "target": "conf2"}]))


@pytest.mark.parametrize("field", ["uid", "gid"])
@pytest.mark.parametrize("value", ["99999999999", "4294967295", "-1", "root", "1e3", 2**70])
def test_a_uid_or_gid_out_of_range_is_a_stack_error(field: str, value: object):
    with pytest.raises(StackError, match=f"{field} .*Swarm needs a number"):
        read_model(_model([{"source": "a", field: value}]))


@pytest.mark.parametrize("target", ["/", "/run/secrets", "/run/secrets/", "."])
def test_a_target_that_is_a_directory_everyone_needs_is_refused(target: str):
    with pytest.raises(StackError, match="bad target"):
        read_model(_model([{"source": "a", "target": target}]))


@pytest.mark.parametrize("service", ["\x00", "a/b", "..", ".", "", "x y"])
def test_a_service_name_compose_would_refuse_is_a_stack_error(service: str):
    model = _model([{"source": "a"}])
    model["services"] = {service: model["services"]["app"]}
    with pytest.raises(StackError, match="bad service name"):
        read_model(model)


def test_init_where_the_store_would_be_a_file_is_one_line(tmp_path: Path, project: Path):
    from conftest import devsecrets, make_user

    user = make_user(tmp_path, "carol", project)
    user.store.write_bytes(b"not a directory")
    result = devsecrets(["init"], cwd=project, env=user.subprocess_env())
    assert result.returncode == 1, result.stderr
    assert b"cannot create the store" in result.stderr
    assert b"Traceback" not in result.stderr


def test_the_watchers_change_check_reads_like_the_store(stored: User):
    from devsecrets.live import _stamp
    from devsecrets.store import Store

    (stored.store / "zero.sops.yaml").symlink_to("/dev/zero")
    store = Store(stored.store)
    assert _stamp(store, "zero") is None  # neither followed nor read forever
    assert _stamp(store, "good") == (stored.store / "good.sops.yaml").read_bytes()


@pytest.mark.parametrize("name", ["../recipients", "../../etc/shadow", "sops", "a/b"])
def test_an_external_name_no_store_entry_can_have_is_named_invalid(name: str):
    config = _model([{"source": "a"}])
    config["secrets"]["a"] = {"external": True, "name": name}
    with pytest.raises(StackError, match="is not a valid secret name") as caught:
        read_model(config)
    assert repr(name) in caught.value.message
    assert "lacks" not in caught.value.message
    assert caught.value.hint


@pytest.mark.docker
def test_a_stack_with_invalid_external_names_fails_in_one_line(
    stored: User, monkeypatch, docker_engine: str
):
    stack = stored.project / "docker-stack.yml"
    stack.write_text(
        "services:\n  app:\n    image: x\n    network_mode: none\n    secrets: [a]\n"
        "secrets:\n  a:\n    external: true\n    name: ../recipients\n"
    )
    monkeypatch.chdir(stored.project)
    err = one_line_failure(stored.run("render", "--stdout"))
    assert "secret 'a' has name '../recipients', which is not a valid secret name" in err


def test_several_invalid_external_names_are_named_in_one_error():
    config = _model([{"source": "a"}, {"source": "b"}])
    config["secrets"]["a"] = {"external": True, "name": "../recipients"}
    config["secrets"]["b"] = {"external": True, "name": "../../etc/shadow"}
    with pytest.raises(StackError, match="not valid secret names") as caught:
        read_model(config)
    assert "'../recipients'" in caught.value.message
    assert "'../../etc/shadow'" in caught.value.message

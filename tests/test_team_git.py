"""Store files through real git: the merge driver merges by meaning, textconv diffs show names
and hashes, never values; `resolve` settles a real conflict."""

from __future__ import annotations

import pytest
from gitteam import Person, person, remote

from devsecrets.keys import create_key_file

pytestmark = pytest.mark.slow  # real git repos, merges and drivers: seconds each

CANARY = b"canary-merge-31c7-do-not-leak"


@pytest.fixture
def alice(tmp_path) -> Person:
    alice = person(tmp_path, "alice", remote(tmp_path), clone=False)
    result = alice.run("init", "--name", "alice")
    assert result.exit_code == 0, result.stderr
    assert "set up git merge and diff drivers" in result.stderr
    assert alice.run("set", "db_password", input=b"v1").exit_code == 0
    assert alice.run("set", "api_token", input=b"t1").exit_code == 0
    alice.commit_all("store")
    return alice


def branch(alice: Person, name: str, *commands: tuple) -> None:
    """Run devsecrets `commands` on a new branch `name` off main, commit, back to main."""
    alice.git("checkout", "-q", "-b", name)
    for args, value in commands:
        result = alice.run(*args, input=value)
        assert result.exit_code == 0, result.stderr
    alice.commit_all(name)
    alice.git("checkout", "-q", "main")


def on_main(alice: Person, *commands: tuple) -> None:
    for args, value in commands:
        result = alice.run(*args, input=value)
        assert result.exit_code == 0, result.stderr
    alice.commit_all("main")


def reader(tmp_path, alice: Person, name: str) -> tuple:
    key_file = tmp_path / f"{name}.txt"
    public = create_key_file(key_file, "now")
    return public, alice.user.with_env(
        {"SOPS_AGE_KEY_FILE": str(key_file), "HOME": str(tmp_path / name)}
    )


def assert_valid_files(alice: Person) -> None:
    for path in alice.user.store.glob("*.sops.yaml"):
        assert b"<<<<<<<" not in path.read_bytes()
    listing = alice.run("ls")
    assert listing.exit_code == 0, listing.stderr


def test_init_sets_up_git_and_says_so(alice: Person):
    assert (
        alice.git("config", "merge.devsecrets.driver")
        .stdout.strip()
        .endswith("git-merge %O %A %B %P")
    )
    assert "git-textconv" in alice.git("config", "diff.devsecrets.textconv").stdout
    assert "merge=devsecrets" in (alice.user.store / ".gitattributes").read_text()
    assert ".devsecrets/.gitattributes" in alice.git("ls-files").stdout


def test_init_no_git_skips_it(tmp_path):
    bob = person(tmp_path, "bob", remote(tmp_path), clone=False)
    result = bob.run("init", "--name", "bob", "--no-git")
    assert result.exit_code == 0, result.stderr
    assert not (bob.user.store / ".gitattributes").exists()
    assert bob.git("config", "merge.devsecrets.driver", check=False).returncode != 0


def test_a_recipient_change_and_a_value_change_merge(tmp_path, alice: Person):
    dave, dave_user = reader(tmp_path, alice, "dave")
    branch(alice, "team", (("recipients", "add", "dave", dave), None))
    on_main(alice, (("set", "db_password"), CANARY))
    merged = alice.git("merge", "-q", "--no-edit", "team", check=False)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert CANARY.decode() not in merged.stdout + merged.stderr
    assert alice.run("get", "db_password").stdout == CANARY
    assert dave_user.run("get", "db_password").stdout == CANARY  # the new value, for dave too
    assert dave_user.run("get", "api_token").stdout == b"t1"
    assert "keys differ" not in alice.run("ls").out
    assert_valid_files(alice)


def test_the_same_value_on_both_sides_merges(alice: Person):
    branch(alice, "left", (("set", "db_password"), b"same"))
    on_main(alice, (("set", "db_password"), b"same"))
    merged = alice.git("merge", "-q", "--no-edit", "left", check=False)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert alice.run("get", "db_password").stdout == b"same"


def test_two_different_values_conflict_leave_a_valid_file_and_resolve(alice: Person):
    branch(alice, "left", (("set", "db_password"), b"left"))
    on_main(alice, (("set", "db_password"), b"right"))
    merged = alice.git("merge", "--no-edit", "left", check=False)
    assert merged.returncode != 0
    assert "devsecrets: db_password: both branches changed the value" in merged.stderr
    assert "devsecrets: devsecrets:" not in merged.stderr
    assert "devsecrets resolve db_password --ours|--theirs|--edit" in merged.stdout + merged.stderr
    assert alice.run("get", "db_password").stdout == b"right"  # ours, a valid file
    assert_valid_files(alice)
    listing = alice.run("ls")
    assert "merge conflict: `devsecrets resolve db_password" in listing.out
    assert "conflicts" not in alice.git("status", "--porcelain").stdout  # ignored by git

    result = alice.run("resolve", "db_password", "--theirs")
    assert result.exit_code == 0, result.stderr
    assert "git add" in result.stderr
    assert alice.run("get", "db_password").stdout == b"left"
    assert "merge conflict" not in alice.run("ls").out
    alice.git("add", "-A")
    alice.git("commit", "-q", "--no-edit")
    assert alice.run("resolve", "db_password", "--ours").exit_code == 1


def test_a_symlinked_conflicts_dir_fails_the_merge_visibly_and_is_ignored(alice: Person, tmp_path):
    branch(alice, "left", (("set", "db_password"), b"left"))
    on_main(alice, (("set", "db_password"), b"right"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (alice.user.store / ".conflicts").symlink_to(elsewhere)
    assert ".conflicts" not in alice.git("status", "--porcelain").stdout  # ignored, as a link too
    merged = alice.git("merge", "--no-edit", "left", check=False)
    assert merged.returncode != 0  # the driver failed: git keeps the conflict
    assert "UU .devsecrets/db_password.sops.yaml" in alice.git("status", "--porcelain").stdout
    assert "was not saved" in merged.stderr
    assert "devsecrets: hint: delete it (`rm " in merged.stderr
    assert list(elsewhere.iterdir()) == []  # nothing written through the link
    for command in ("ls", "check"):
        result = alice.run(command)
        assert result.exit_code == 1
        assert ".conflicts is a symlink: the merge driver cannot keep" in (
            result.out + result.stderr
        )


def test_resolve_edit_and_ours(alice: Person, tmp_path):
    for side in ("ours", "edit"):
        branch(alice, f"l-{side}", (("set", "api_token"), f"left-{side}".encode()))
        on_main(alice, (("set", "api_token"), f"right-{side}".encode()))
        assert alice.git("merge", "--no-edit", f"l-{side}", check=False).returncode != 0
        editor = tmp_path / "editor.sh"
        editor.write_text('#!/bin/sh\nprintf edited > "$1"\n')
        editor.chmod(0o755)
        result = alice.user.with_env({"EDITOR": str(editor)}).run(
            "resolve", "api_token", f"--{side}"
        )
        assert result.exit_code == 0, result.stderr
        expected = b"right-ours" if side == "ours" else b"edited"
        assert alice.run("get", "api_token").stdout == expected
        alice.git("add", "-A")
        alice.git("commit", "-q", "--no-edit")


def test_two_different_recipients_added_merge_entry_by_entry(tmp_path, alice: Person):
    carol, carol_user = reader(tmp_path, alice, "carol")
    dave, dave_user = reader(tmp_path, alice, "dave")
    branch(alice, "carol", (("recipients", "add", "carol", carol), None))
    on_main(alice, (("recipients", "add", "dave", dave), None))
    merged = alice.git("merge", "-q", "--no-edit", "carol", check=False)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    recipients = (alice.user.store / "recipients.yaml").read_text()
    assert f"carol: {carol}" in recipients and f"dave: {dave}" in recipients
    for user in (carol_user, dave_user):
        assert user.run("get", "db_password").stdout == b"v1"
    assert "keys differ" not in alice.run("ls").out


def test_an_unapproved_recipient_from_the_other_branch_is_not_merged_in(tmp_path, alice: Person):
    mallory_key = create_key_file(tmp_path / "mallory.txt", "now")
    alice.git("checkout", "-q", "-b", "evil")
    recipients = alice.user.store / "recipients.yaml"
    recipients.write_text(recipients.read_text() + f"ci-bot: {mallory_key}\n")
    # a re-wrap the attacker cannot do without a key: theirs keeps the old data key and adds
    # a stanza; here alice's own tool would refuse, so plant it through the core
    from devsecrets.keys import find_identities
    from devsecrets.store import Store

    Store(alice.user.store).rekey(find_identities(alice.user.env_for_core()))
    alice.commit_all("evil")
    alice.git("checkout", "-q", "main")
    on_main(alice, (("set", "db_password"), CANARY))
    merged = alice.git("merge", "--no-edit", "evil", check=False)
    assert merged.returncode != 0
    out = merged.stdout + merged.stderr
    assert "not approved" in out
    assert mallory_key in out
    assert alice.run("get", "db_password").stdout == CANARY
    from devsecrets.store import sopsfile

    doc = sopsfile.parse((alice.user.store / "db_password.sops.yaml").read_bytes(), "x")
    assert [s.recipient for s in doc.age] == [alice.user.public_key()]  # ours, for alice only


def test_without_a_key_the_driver_leaves_ours_and_says_why(tmp_path, alice: Person):
    branch(alice, "left", (("set", "db_password"), b"left"))
    on_main(alice, (("set", "db_password"), b"right"))
    keyless = Person(alice.user.with_env({"HOME": str(tmp_path / "keyless")}), "alice")
    merged = keyless.git("merge", "--no-edit", "left", check=False)
    assert merged.returncode != 0
    assert "none of your identities opens it" in merged.stdout + merged.stderr
    assert alice.run("get", "db_password").stdout == b"right"
    assert_valid_files(alice)


def test_git_diff_shows_names_hashes_and_recipients_never_values(tmp_path, alice: Person):
    alice.run("set", "db_password", input=CANARY)
    diff = alice.git("diff", "--", ".devsecrets").stdout
    assert "secret: db_password" in diff
    assert "-value: " in diff and "+value: " in diff and "keyed hash" in diff
    assert CANARY.decode() not in diff
    alice.commit_all("canary")
    dave, _ = reader(tmp_path, alice, "dave")
    alice.run("recipients", "add", "dave", dave)
    diff = alice.git("diff", "--", ".devsecrets/db_password.sops.yaml").stdout
    assert "+  dave" in diff
    assert "value:" not in diff.replace(" value:", "")  # the value did not change: no -/+ line
    log = alice.git("log", "-p", "--", ".devsecrets").stdout
    assert "secret: api_token" in log
    assert CANARY.decode() not in log
    shown = alice.git("diff", "--", ".devsecrets", check=False)
    assert shown.returncode == 0
    alice.commit_all("dave")
    alice.run("set", "db_password", input=CANARY + b"2")
    opted = Person(alice.user.with_env({"DEVSECRETS_DIFF_VALUES": "1"}), "alice")
    assert CANARY.decode() in opted.git("diff").stdout  # only when the user asks, for themselves


def test_a_recipient_added_by_someone_else_merges_once_approved(tmp_path, alice: Person):
    """Bob adds dave on his clone while alice changes a value; alice merges, approves, merges."""
    from gitteam import person

    bare = tmp_path / "remote.git"
    alice.git("push", "-q", "-u", "origin", "main")
    bob = person(tmp_path, "bob", bare, clone=True)
    bob.run("init", "--name", "bob")
    bob.commit_all("bob asks to join")
    bob.git("push", "-q")
    alice.git("pull", "-q", "--no-rebase")
    assert alice.run("recipients", "add", "bob").exit_code == 0
    alice.commit_all("add bob")
    alice.git("push", "-q")
    bob.git("pull", "-q")
    assert bob.run("recipients", "approve", "--yes").exit_code == 0
    dave, dave_user = reader(tmp_path, alice, "dave")
    assert bob.run("recipients", "add", "dave", dave).exit_code == 0
    bob.commit_all("add dave")
    bob.git("push", "-q")

    on_main(alice, (("set", "db_password"), CANARY))
    alice.git("fetch", "-q")
    merged = alice.git("merge", "--no-edit", "origin/main", check=False)
    assert merged.returncode != 0
    assert dave in merged.stdout + merged.stderr and "not approved" in merged.stderr
    assert_valid_files(alice)
    approve = alice.run("recipients", "approve", "--yes")
    assert approve.exit_code == 0, approve.stderr
    assert "dave" in approve.stderr and "by Bob" in approve.stderr
    alice.git("merge", "--abort")
    merged = alice.git("merge", "--no-edit", "origin/main", check=False)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert dave_user.run("get", "db_password").stdout == CANARY
    assert bob.user.run("get", "db_password").exit_code == 0


def test_git_diff_without_a_key_still_says_what_changed(tmp_path, alice: Person):
    alice.run("set", "db_password", input=CANARY)
    keyless = Person(alice.user.with_env({"HOME": str(tmp_path / "keyless")}), "alice")
    diff = keyless.git("diff", "--", ".devsecrets").stdout
    assert "secret: db_password" in diff
    assert "+value: cannot decrypt (ciphertext " in diff
    assert CANARY.decode() not in diff

"""Working as a team with real git and real keys: joining, approving, removing, and someone
who can push but holds no key."""

from __future__ import annotations

import pytest
from gitteam import Person, person, remote

from devsecrets.keys import find_identities
from devsecrets.store import age, cipher, sopsfile

CANARY = b"canary-team-9d4f-do-not-leak"


@pytest.fixture
def bare(tmp_path):
    return remote(tmp_path)


@pytest.fixture
def alice(tmp_path, bare) -> Person:
    """The first member: created the store, set a secret, pushed."""
    alice = person(tmp_path, "alice", bare, clone=False)
    result = alice.run("init", "--name", "alice")
    assert result.exit_code == 0, result.stderr
    assert "created the store with you as its first recipient" in result.stderr
    assert alice.run("set", "db_password", input=b"first").exit_code == 0
    alice.commit_all("store")
    alice.git("push", "-q", "-u", "origin", "main")
    return alice


def joined(tmp_path, bare, alice: Person, name: str) -> Person:
    """`name` clones, asks to join, pushes; alice pulls, approves, pushes; `name` pulls."""
    newcomer = person(tmp_path, name, bare, clone=True)
    result = newcomer.run("init", "--name", name)
    assert result.exit_code == 0, result.stderr
    newcomer.commit_all(f"{name} asks to join")
    newcomer.git("push", "-q")
    alice.git("pull", "-q")
    result = alice.run("recipients", "add", name)
    assert result.exit_code == 0, result.stderr
    alice.commit_all(f"add {name}")
    alice.git("push", "-q")
    newcomer.git("pull", "-q")
    return newcomer


def test_joining_approving_reading_and_being_removed(tmp_path, bare, alice: Person):
    carol = person(tmp_path, "carol", bare, clone=True)
    result = carol.run("init", "--name", "carol")
    assert result.exit_code == 0, result.stderr
    public = carol.user.public_key()
    assert f"your public key: {public}" in result.stderr
    assert "recorded your join request as 'carol'" in result.stderr
    assert "devsecrets recipients add carol" in result.stderr
    assert "git add" in result.stderr
    assert "carol" not in (carol.user.store / "recipients.yaml").read_text()  # asked, not added
    refused = carol.run("get", "db_password")
    assert refused.exit_code == 1
    assert (
        "hint: your join request is requests/carol.pub: commit and push it, ask a member to "
        "run `devsecrets recipients add carol` and push, then pull" in refused.stderr
    )
    assert "YOU KEY" not in refused.stderr
    carol.commit_all("carol asks to join")
    carol.git("push", "-q")

    alice.git("pull", "-q")
    assert "(join request: `devsecrets recipients add carol`)" in alice.run("recipients", "ls").out
    result = alice.run("recipients", "add", "carol")  # no key to copy
    assert result.exit_code == 0, result.stderr
    assert f"approved the join request of carol ({public})" in result.stderr
    assert "carol can now read every secret in this store (1): db_password" in result.stderr
    assert not (alice.user.store / "requests" / "carol.pub").exists()
    alice.commit_all("add carol")
    alice.git("push", "-q")

    carol.git("pull", "-q")
    assert carol.run("get", "db_password").stdout == b"first"
    assert carol.run("whoami").out.startswith(f"carol  {public}")
    kept = (carol.user.store / "db_password.sops.yaml").read_bytes()  # a copy carol keeps

    result = alice.run("recipients", "rm", "carol")
    assert result.exit_code == 0, result.stderr
    assert "may have kept every value" in result.stderr
    assert alice.run("set", "db_password", input=CANARY).exit_code == 0
    alice.commit_all("remove carol, rotate")
    alice.git("push", "-q")

    carol.git("pull", "-q")
    result = carol.run("get", "db_password")
    assert result.exit_code == 1
    assert "none of your identities can open" in result.stderr
    assert CANARY.decode() not in result.stderr + result.out
    # not even with the data key carol took from her copy
    ids = find_identities(carol.user.env_for_core()).keys
    old_key = age.unwrap(sopsfile.parse(kept, "kept").age, ids)
    assert old_key is not None
    now = sopsfile.parse((carol.user.store / "db_password.sops.yaml").read_bytes(), "now")
    with pytest.raises(Exception, match="integrity check failed"):
        cipher.decrypt(old_key, cipher.parse_leaf(now.value, "now"), b"db_password:", "now")


def test_add_without_key_and_without_request_says_what_to_do(alice: Person):
    result = alice.run("recipients", "add", "dave")
    assert result.exit_code == 1
    assert "no join request from 'dave'" in result.stderr
    assert "devsecrets init" in result.stderr


def test_a_symlinked_join_request_is_named_as_refused(alice: Person, tmp_path):
    requests = alice.user.store / "requests"
    requests.mkdir(exist_ok=True)
    (tmp_path / "key.pub").write_text("age1notreallyakey\n")
    (requests / "carol.pub").symlink_to(tmp_path / "key.pub")
    result = alice.run("recipients", "add", "carol")
    assert result.exit_code == 1
    assert "requests/carol.pub is a symlink; refusing to read it" in result.stderr
    assert "devsecrets: hint: delete it (`git rm " in result.stderr
    assert "no join request" not in result.stderr


def test_a_silent_recipient_is_refused_by_every_command_that_encrypts(
    tmp_path, bare, alice: Person
):
    """Mallory can push but holds no key: she appends her own key to recipients.yaml."""
    mallory = person(tmp_path, "mallory", bare, clone=True)
    mallory.run("whoami")  # no key yet
    from devsecrets.keys import create_key_file

    mallory_key = create_key_file(mallory.user.key_file, "now")
    recipients = mallory.clone / ".devsecrets" / "recipients.yaml"
    recipients.write_text(recipients.read_text() + f"ci-bot: {mallory_key}\n")
    mallory.commit_all("ci: add the build bot")
    mallory.git("push", "-q")

    alice.git("pull", "-q")
    store = alice.user.store
    before = {p.name: p.read_bytes() for p in store.glob("*.sops.yaml")}
    bob_key = tmp_path / "bob.txt"
    bob_public = create_key_file(bob_key, "now")
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf new > "$1"\n')
    editor.chmod(0o755)
    for args in (
        ("set", "db_password"),
        ("set", "new_secret"),
        ("rekey",),
        ("recipients", "add", "bob", bob_public),
        ("recipients", "rm", "alice"),
    ):
        result = alice.run(*args, input=CANARY)
        assert result.exit_code == 1, args
        assert "recipients.yaml lists recipients you have not approved" in result.stderr
        assert "ci-bot (age1" in result.stderr
        assert "by Mallory" in result.stderr  # the commit and its author, from git log
        assert "devsecrets recipients approve" in result.stderr
    result = alice.user.with_env({"EDITOR": str(editor)}).run("edit", "db_password")
    assert result.exit_code == 1
    assert "not approved" in result.stderr
    assert {p.name: p.read_bytes() for p in store.glob("*.sops.yaml")} == before
    assert "bob" not in (store / "recipients.yaml").read_text()

    # approving is a person's decision, on a terminal or with --yes
    result = alice.run("recipients", "approve")
    assert result.exit_code == 2
    assert "devsecrets: error: not on a terminal: nothing approved\n" in result.stderr
    assert (
        "devsecrets: hint: review the keys above, then `devsecrets recipients approve --yes`"
        in (result.stderr)
    )
    assert "Usage:" not in result.stderr and "Error:" not in result.stderr
    assert alice.run("set", "db_password", input=CANARY).exit_code == 1


def test_the_first_use_of_a_store_shows_the_whole_list_once(tmp_path, bare, alice: Person):
    bob = joined(tmp_path, bare, alice, "bob")
    result = bob.run("set", "api_token", input=b"t")
    assert result.exit_code == 1
    assert "you have not approved this store's recipients yet" in result.stderr
    assert "alice (age1" in result.stderr
    assert "bob (age1" not in result.stderr  # your own key needs no approval
    result = bob.run("recipients", "approve", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "recipients of this store:" in result.stderr
    assert "approved: alice" in result.stderr
    assert bob.run("set", "api_token", input=b"t").exit_code == 0
    assert "nothing to approve" in bob.run("recipients", "approve").stderr


def test_removals_are_reported_once_and_need_no_approval(tmp_path, bare, alice: Person):
    bob = joined(tmp_path, bare, alice, "bob")
    carol = joined(tmp_path, bare, alice, "carol")
    carol.run("recipients", "approve", "--yes")
    assert alice.run("recipients", "rm", "bob").exit_code == 0
    alice.commit_all("remove bob")
    alice.git("push", "-q")
    carol.git("pull", "-q")
    result = carol.run("set", "x", input=b"v")
    assert result.exit_code == 0, result.stderr
    assert "note: no longer a recipient: bob (age1" in result.stderr
    assert "by Alice" in result.stderr
    assert "no longer" not in carol.run("set", "x", input=b"w").stderr
    assert bob.run("recipients", "approve", "--yes").exit_code == 0


def test_approvals_live_outside_the_repo_and_follow_the_store_path(alice: Person):
    approved = list((alice.user.home / ".config" / "devsecrets" / "approved").glob("*.json"))
    assert len(approved) == 1
    assert oct(approved[0].stat().st_mode & 0o777) == "0o600"
    tracked = alice.git("ls-files").stdout
    assert "approved" not in tracked


def test_the_members_own_add_and_rm_update_their_approval(tmp_path, bare, alice: Person):
    from devsecrets.keys import create_key_file

    dave = create_key_file(tmp_path / "dave.txt", "now")
    assert alice.run("recipients", "add", "dave", dave).exit_code == 0
    assert alice.run("set", "x", input=b"v").exit_code == 0  # no approval asked for dave
    assert alice.run("recipients", "rm", "dave").exit_code == 0
    # dave re-added behind alice's back is unapproved again
    recipients = alice.user.store / "recipients.yaml"
    recipients.write_text(recipients.read_text() + f"dave: {dave}\n")
    result = alice.run("set", "x", input=b"w")
    assert result.exit_code == 1
    assert "dave (age1" in result.stderr
    assert "not committed yet" in result.stderr


def test_names_from_the_repo_cannot_send_terminal_control_codes(tmp_path, alice: Person):
    from devsecrets.keys import create_key_file

    key = create_key_file(tmp_path / "m.txt", "now")
    recipients = alice.user.store / "recipients.yaml"
    recipients.write_text(recipients.read_text() + f'"ci\\e[8mbot": {key}\n')
    result = alice.run("set", "x", input=b"v")
    assert result.exit_code == 1
    assert "ci" in result.stderr
    assert "\x1b" not in result.stderr
    assert "\x1b" not in alice.run("recipients", "ls").out

    # a commit author is a free-form name too
    lines = recipients.read_text().splitlines()
    recipients.write_text("".join(f"{line}\n" for line in lines if not line.startswith('"ci')))
    recipients.write_text(recipients.read_text() + f"cibot: {key}\n")
    alice.git("add", "-A")
    alice.git("-c", "user.name=x", "commit", "-q", "-m", "bot", "--author", "Ev\x1b[8mil <e@x>")
    result = alice.run("set", "x", input=b"v")
    assert "by Ev?[8mil" in result.stderr
    assert "\x1b" not in result.stderr

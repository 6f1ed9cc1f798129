"""`get` of several names, `--json`, and the lean reader: it agrees with the full reader or
hands over to it (None); it never returns a value the full reader would refuse."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import User

from devsecrets import fastget
from devsecrets.errors import DevsecretsError
from devsecrets.keys import find_identities
from devsecrets.store import Store

CANARY = b"canary-7f3a91-value"
ENTRY = [sys.executable, "-c", "import sys; from devsecrets.entry import main; sys.exit(main())"]


def lean(user: User, *names: str) -> dict[str, bytes] | None:
    env = user.env_for_core()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return fastget.read_values(str(user.store), list(names))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def full(user: User, name: str) -> bytes | DevsecretsError:
    try:
        return Store(user.store).read(name, find_identities(user.env_for_core())).value
    except DevsecretsError as e:
        return e


def test_the_lean_reader_reads_what_devsecrets_writes(alice: User):
    alice.run("set", "a", input=CANARY)
    alice.run("set", "b", input=b"\xff\x00binary\n")
    alice.run("set", "empty_ok", input=b"x")
    assert lean(alice, "a", "b") == {"a": CANARY, "b": b"\xff\x00binary\n"}


def test_several_names_print_one_json_object(alice: User):
    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "tls_key", input=b"\xff\xfe raw")
    for run in (alice.run, lambda *a: cli_process(alice, *a)):
        result = run("get", "--json", "db_password", "tls_key", "db_password")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout) == {
            "db_password": CANARY.decode(),
            "tls_key": {"base64": base64.b64encode(b"\xff\xfe raw").decode()},
        }
        assert CANARY.decode() not in result.stderr


def test_several_names_without_json_are_a_usage_error(alice: User):
    alice.run("set", "a", input=CANARY)
    for run in (alice.run, lambda *a: cli_process(alice, *a)):
        result = run("get", "a", "a2")
        assert result.exit_code == 2
        assert result.stdout == b""
        assert "--json" in result.stderr


def test_one_missing_name_prints_nothing(alice: User):
    alice.run("set", "a", input=CANARY)
    for run in (alice.run, lambda *a: cli_process(alice, *a)):
        result = run("get", "--json", "a", "missing")
        assert result.exit_code == 1
        assert result.stdout == b""
        assert "'missing'" in result.stderr
        assert CANARY.decode() not in result.stderr


class _Result:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.exit_code, self.stdout, self.stderr = (
            proc.returncode,
            proc.stdout,
            proc.stderr.decode(),
        )


def cli_process(user: User, *args: str) -> _Result:
    """The console script in a process of its own: the lean path, then a fast exit."""
    proc = subprocess.run(
        [*ENTRY, "--store", str(user.store), *args],
        env=user.subprocess_env(),
        capture_output=True,
        check=False,
    )
    return _Result(proc)


def _replace(path: Path, old: bytes, new: bytes) -> None:
    text = path.read_bytes()
    assert old in text
    path.write_bytes(text.replace(old, new, 1))


def tamper_cases() -> list[tuple[str, object]]:
    return [
        ("mac swapped for another file's", "swap_mac"),
        ("value swapped for another file's", "swap_value"),
        ("lastmodified changed", lambda p: _replace(p, b'lastmodified: "20', b'lastmodified: "19')),
        ("impossible date", lambda p: _replace_date(p, "2025-02-29")),
        ("value typed int", lambda p: _replace(p, b"type:str]\nsops", b"type:int]\nsops")),
        ("renamed file", "rename"),
        ("a symlink", "symlink"),
        ("a fifo", "fifo"),
        ("oversized", lambda p: p.write_bytes(p.read_bytes() + b"#" * (2 << 20))),
        ("an anchor", lambda p: _replace(p, b"sops:", b"sops: &s")),
        ("a duplicate key", lambda p: p.write_bytes(p.read_bytes() + b"a: x\n")),
    ]


def _replace_date(path: Path, date: str) -> None:
    text = path.read_text()
    start = text.index('lastmodified: "') + len('lastmodified: "')
    path.write_text(text[:start] + date + text[start + 10 :])


@pytest.mark.parametrize(("what", "how"), tamper_cases(), ids=[c[0] for c in tamper_cases()])
def test_a_file_the_full_reader_refuses_is_never_read_by_the_lean_one(alice: User, what, how):
    alice.run("set", "a", input=CANARY)
    alice.run("set", "other", input=b"other value")
    path, other = alice.store / "a.sops.yaml", alice.store / "other.sops.yaml"
    lines, other_lines = path.read_text().splitlines(), other.read_text().splitlines()
    if how == "swap_mac":
        mac = next(i for i, line in enumerate(lines) if line.startswith("    mac:"))
        lines[mac] = next(line for line in other_lines if line.startswith("    mac:"))
        path.write_text("\n".join(lines) + "\n")
    elif how == "swap_value":
        lines[0] = "a:" + other_lines[0].partition(":")[2]
        path.write_text("\n".join(lines) + "\n")
    elif how == "rename":
        path.unlink()
        other.rename(path)
    elif how == "symlink":
        target = alice.project / "elsewhere.yaml"
        target.write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(target)
    elif how == "fifo":  # holding the file's own valid text, ready to be read
        text = path.read_bytes()
        path.unlink()
        os.mkfifo(path)
        fifo = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        os.write(fifo, text)
    else:
        how(path)  # type: ignore[operator]
    assert lean(alice, "a") is None
    if how == "fifo":
        os.close(fifo)
        return  # the full reader's verdict on a FIFO is the store's own test's business
    expected = full(alice, "a")
    assert isinstance(expected, DevsecretsError), what
    result = cli_process(alice, "get", "a")  # whatever the lean path did, the full one decides
    if isinstance(expected, DevsecretsError):
        assert (result.exit_code, result.stdout) == (1, b""), what
    else:
        assert (result.exit_code, result.stdout) == (0, expected), what
    assert CANARY.decode() not in result.stderr


def reseal(path: Path, user: User, *, value: bytes | None = None, stamp: str | None = None):
    """Re-encrypt parts of a file under its own data key: a forgery only a key holder (or a
    stale copy) could make, which only the MAC and the date check catch."""
    from dataclasses import replace

    from devsecrets.store import cipher, sopsfile, unseal

    doc = sopsfile.parse(path.read_bytes(), str(path))
    opened = unseal(doc, find_identities(user.env_for_core()), str(path))
    assert opened is not None
    key, name = opened.key, doc.name
    if value is not None:
        leaf = cipher.encrypt(key, value, f"{name}:".encode())
        doc = replace(doc, value=cipher.format_leaf(leaf))
    if stamp is not None:
        mac = cipher.encrypt(key, cipher.mac_hex([opened.plaintext]).encode(), stamp.encode())
        doc = replace(doc, lastmodified=stamp, mac=cipher.format_leaf(mac))
    path.write_bytes(sopsfile.emit(doc))


@pytest.mark.parametrize(
    ("value", "stamp"),
    [(b"forged value", None), (None, "2025-02-29T10:00:00Z"), (None, "2025-01-01T24:00:00Z")],
    ids=["value without its MAC", "no such day", "no such hour"],
)
def test_a_forgery_under_the_files_own_key_is_refused_by_both(alice: User, value, stamp):
    alice.run("set", "a", input=CANARY)
    reseal(alice.store / "a.sops.yaml", alice, value=value, stamp=stamp)
    assert lean(alice, "a") is None
    assert isinstance(full(alice, "a"), DevsecretsError)
    result = cli_process(alice, "get", "a")
    assert (result.exit_code, result.stdout) == (1, b"")


def test_an_interrupted_recipients_rm_is_reported_by_get(alice: User):
    alice.run("set", "a", input=CANARY)
    journal = {"removed": {"carol": "age1" + "q" * 58}}
    (alice.store / ".journal").write_text(json.dumps(journal))
    assert lean(alice, "a") is None
    result = cli_process(alice, "get", "a")
    assert (result.exit_code, result.stdout) == (0, CANARY)
    assert "devsecrets: warning:" in result.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"SOPS_AGE_KEY_CMD": "cat /nonexistent"},
        {"SOPS_AGE_KEY": "AGE-SECRET-KEY-1NOTAKEY"},
        {"SOPS_AGE_KEY": "AGE-PLUGIN-YUBIKEY-1XYZ"},
        {"SOPS_AGE_SSH_PRIVATE_KEY_FILE": "/nonexistent"},
    ],
)
def test_identities_the_lean_reader_cannot_judge_go_to_the_full_one(alice: User, env):
    alice.run("set", "a", input=CANARY)
    assert lean(alice.with_env(env), "a") is None
    # and the full path still reads the value (those sources only add problems)
    assert cli_process(alice.with_env(env), "get", "a").stdout == CANARY


def test_get_imports_neither_yaml_nor_click(alice: User):
    alice.run("set", "a", input=CANARY)
    code = (
        "import sys\n"
        "before = set(sys.modules)  # site may have loaded some (an editable install does)\n"
        "from devsecrets.entry import main\n"
        f"assert main(['--store', {str(alice.store)!r}, 'get', 'a']) == 0\n"
        "heavy = {'yaml', 'click', 'dataclasses', 'pathlib', 'json', 'typing'}\n"
        "print(sorted((heavy & set(sys.modules)) - before), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=alice.subprocess_env(), capture_output=True, check=True
    )
    assert proc.stdout == CANARY
    assert proc.stderr.decode().strip() == "[]"


# Runs the lean command in-process (the console script would leave by os._exit), then reports
# the core-dump settings it left and whether it stayed off the full CLI.
GUARD_PROBE = (
    "import ctypes, resource, sys; from devsecrets.entry import main; "
    "code = main(sys.argv[1:]); sys.stdout.flush(); "
    "print('', resource.getrlimit(resource.RLIMIT_CORE)[0], ctypes.CDLL(None).prctl(3, 0, 0, 0, 0),"
    " 'click' in sys.modules, code, file=sys.stderr)"
)


def guard_probe(user: User, *args: str, stdin: bytes | None = None) -> list[str]:
    """(soft core limit, PR_GET_DUMPABLE, click imported, exit code) after the command ran."""
    proc = subprocess.run(
        ["sh", "-c", 'ulimit -c unlimited && exec "$@"', "sh", sys.executable, "-c", GUARD_PROBE]
        + ["--store", str(user.store), *args],
        env=user.subprocess_env(),
        input=stdin,
        capture_output=True,
        check=False,
    )
    assert CANARY.decode() not in proc.stderr.decode()
    return proc.stderr.decode().splitlines()[-1].split()


def test_the_lean_get_turns_core_dumps_off_before_it_reads(alice: User):
    alice.run("set", "a", input=CANARY)
    assert guard_probe(alice, "get", "a") == ["0", "0", "False", "0"]


def test_up_and_render_read_with_the_lean_reader_and_the_full_one_decides_the_rest(
    alice: User,
):
    """`pipeline._read_values`: the same values as the store's reader; an empty value and a
    file the lean reader declines get the store's own errors."""
    from devsecrets.errors import EmptySecretError, IntegrityError
    from devsecrets.pipeline import _read_values

    alice.run("set", "a", input=CANARY)
    alice.run("set", "b", input=b"two")
    store, env = Store(alice.store), alice.env_for_core()
    calls: list[int] = []

    def identities():
        calls.append(1)
        return find_identities(env)

    assert _read_values(store, ["a", "b"], env, identities) == {"a": CANARY, "b": b"two"}
    assert calls == []  # the lean reader did it all
    alice.run("set", "b", input=b"")
    with pytest.raises(EmptySecretError):
        _read_values(store, ["a", "b"], env, identities)
    alice.run("set", "b", input=b"two")
    _replace(alice.store / "b.sops.yaml", b"ENC[AES256_GCM,data:", b"ENC[AES256_GCM,data:AA")
    with pytest.raises(IntegrityError) as caught:
        _read_values(store, ["a", "b"], env, identities)
    assert CANARY.decode() not in str(caught.value)

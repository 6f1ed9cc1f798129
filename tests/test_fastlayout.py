"""The lean parser of the store file layout agrees with PyYAML, or steps aside (None)."""

from __future__ import annotations

import string
from datetime import datetime

import yaml
from conftest import examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devsecrets import fastlayout
from devsecrets.store import _emit_recipients, sopsfile, yamlload
from devsecrets.store.sopsfile import AgeStanza, SopsDocument

B64 = string.ascii_letters + string.digits + "+/"
NAME_CHARS = string.ascii_letters + string.digits + "_.-"
# Characters that change a YAML document's meaning, and a few that do not.
MUTATIONS = [
    *" \n\t:#&*!|>-'\"{}[],?%@`\\\r\x85\ufeffaZ0=_.",
    *[" #", ": ", "&a ", "*a", "\n- ", "!!str ", "\n    ", "  ", "<<: ", "---\n", "\n..."],
]


def yaml_tree(text: bytes) -> object:
    """What the full reader sees (the store's strict loader), or the exception it raises."""
    try:
        return yamlload.load(text)
    except yaml.YAMLError as e:
        return e


names = st.text(NAME_CHARS, min_size=0, max_size=66)
b64 = st.text(B64, min_size=1, max_size=60).map(lambda s: s + "=" * (-len(s) % 4))
leaves = st.builds(
    lambda d, i, t, ty: f"ENC[AES256_GCM,data:{d},iv:{i},tag:{t},type:{ty}]",
    b64,
    b64,
    b64,
    st.sampled_from(["str", "int", "bytes", "bool"]),
)
armors = st.lists(st.text(B64 + "=", min_size=1, max_size=64), min_size=0, max_size=4).map(
    lambda body: (
        "\n".join(["-----BEGIN AGE ENCRYPTED FILE-----", *body, "-----END AGE ENCRYPTED FILE-----"])
        + "\n"
    )
)
age_recipients = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=62).map(
    lambda s: "age1" + s
)
recipients = st.one_of(
    age_recipients,
    st.just("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey comment"),
    st.text(NAME_CHARS + "+/=@", min_size=1, max_size=20),
)
stamps = st.datetimes(min_value=datetime(1000, 1, 1)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")
)
versions = st.one_of(
    st.just("3.11.0"),
    st.tuples(*[st.integers(0, 10**10)] * 3).map(lambda v: ".".join(map(str, v))),
    st.text(string.digits + ".v-", max_size=8),
)
documents = st.builds(
    SopsDocument,
    name=names.filter(bool),
    value=st.one_of(st.just(""), leaves),
    age=st.lists(st.builds(AgeStanza, recipients, armors), max_size=3).map(tuple),
    lastmodified=stamps,
    mac=leaves,
    version=versions,
)
# Files in exactly the layout the lean parser reads: edits to them probe its boundary.
simple_documents = st.builds(
    SopsDocument,
    name=st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,10}[a-z0-9]", fullmatch=True),
    value=st.one_of(st.just(""), leaves),
    age=st.lists(
        # built, not filtered: a filter on `recipients` dropped so many inputs that
        # hypothesis's health check failed now and then (and let through the odd "age1/…"
        # of the free-text branch, which is not the simple layout)
        st.builds(AgeStanza, age_recipients, armors),
        min_size=1,
        max_size=2,
    ).map(tuple),
    lastmodified=stamps,
    mac=leaves,
    version=st.just("3.11.0"),
)


def agrees(text: bytes) -> None:
    fast = fastlayout.parse(text)
    if fast is not None:
        assert fast == yaml_tree(text)
    members = fastlayout.parse_recipients(text)
    if members is not None:
        assert members == yaml_tree(text)


def edit(text: str, edits: list[tuple[int, int, int, str]]) -> str:
    """Apply edits, each at (line, column) taken modulo the text's shape, so that every line
    is as likely to be hit as the first (hypothesis favours small numbers)."""
    for line_no, column, kind, char in edits:
        lines = text.split("\n")
        i = line_no % len(lines)
        line = lines[i]
        at = column % (len(line) + 1)
        if kind == 0:
            lines[i] = line[:at] + char + line[at:]  # insert
        elif kind == 1:
            lines[i] = line[:at] + line[at + 1 :]  # delete (the line end, at the end)
            if at == len(line) and i + 1 < len(lines):
                lines[i : i + 2] = [line + lines[i + 1]]
        elif kind == 2:
            lines[i] = line[:at] + char + line[at + 1 :]  # replace
        else:
            lines.insert(i, line)  # duplicate a whole line
        text = "\n".join(lines)
    return text


edits = st.lists(
    st.tuples(
        st.integers(0, 10**4),
        st.integers(0, 10**4),
        st.integers(0, 3),
        st.sampled_from(MUTATIONS),
    ),
    min_size=1,
    max_size=4,
)
members = st.dictionaries(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,8}", fullmatch=True),
    recipients,
    max_size=4,
)


# Teams in exactly the layout the lean parser reads: edits to them probe its boundary.
simple_members = st.dictionaries(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,8}", fullmatch=True),
    recipients.filter(lambda r: r.startswith("age1")),
    min_size=1,
    max_size=3,
)


@settings(max_examples=examples(150), deadline=None)
@given(members)
def test_recipients_files_parse_as_the_full_reader_does(team):
    text = _emit_recipients(team)
    agrees(text)
    if team and all(k.startswith("age1") for k in team.values()):
        assert fastlayout.parse_recipients(text) == team


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(simple_members, members), edits)
def test_any_edited_recipients_file_parses_as_the_full_reader_does_or_is_handed_back(team, e):
    agrees(edit(_emit_recipients(team).decode(), e).encode("utf-8", errors="surrogatepass"))


@settings(max_examples=examples(200), deadline=None)
@given(documents)
def test_every_emitted_file_parses_as_pyyaml_does(doc):
    text = sopsfile.emit(doc)
    agrees(text)
    simple = (
        doc.age
        and all(s.recipient.startswith("age1") for s in doc.age)
        and doc.name != "sops"
        and len(doc.name) <= 64
        and doc.name[0].isalnum()
        and doc.name[-1].isalnum()
        and doc.version.count(".") == 2
        and all(p.isdigit() and len(p) <= 9 for p in doc.version.split("."))
    )
    if simple:  # the layout devsecrets writes is read by the lean parser, not handed back
        assert fastlayout.parse(text) is not None


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(simple_documents, documents),
    edits,
)
def test_any_edited_file_parses_as_pyyaml_does_or_is_handed_back(doc, edits):
    text = edit(sopsfile.emit(doc).decode(), edits)
    agrees(text.encode("utf-8", errors="surrogatepass"))


@settings(max_examples=examples(100), deadline=None)
@given(simple_documents)
def test_the_simple_layout_is_read_by_the_lean_parser(doc):
    text = sopsfile.emit(doc)
    assert fastlayout.parse(text) is not None
    assert fastlayout.parse(text) == yaml_tree(text)


GOOD = sopsfile.emit(
    SopsDocument(
        name="db_password",
        value="ENC[AES256_GCM,data:QUJD,iv:SVY=,tag:VEFHVEFHVEFHVEFHVEFHVA==,type:str]",
        age=(
            AgeStanza(
                "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq",
                "-----BEGIN AGE ENCRYPTED FILE-----\nYWJj\n-----END AGE ENCRYPTED FILE-----\n",
            ),
        ),
        lastmodified="2026-01-02T03:04:05Z",
        mac="ENC[AES256_GCM,data:QUJD,iv:SVY=,tag:VEFHVEFHVEFHVEFHVEFHVA==,type:str]",
        version="3.11.0",
    )
)


def test_the_layout_devsecrets_writes_is_read():
    assert fastlayout.parse(GOOD) == yaml_tree(GOOD)


def test_what_the_hardened_reader_refuses_is_handed_back():
    text = GOOD.decode()
    refused = [
        text.replace("db_password:", "db_password: &a", 1),  # an anchor
        text.replace("    mac:", "    x: &m foo\n    mac:", 1),
        text.replace("    version: 3.11.0", "    version: *m"),  # an alias
        text + "db_password: x\n",  # a duplicate key
        text.replace("    mac:", '    lastmodified: "2026-01-02T03:04:05Z"\n    mac:', 1),
        text.replace("sops:", "sops: !!map", 1),  # a tag
        text + "---\nother: x\n",  # a second document
        text.replace("\n", "\r\n"),
        "\ufeff" + text,
        text.rstrip("\n"),  # truncated
        text[: len(text) // 2],
        text.replace("db_password", "sops", 1),
    ]
    for variant in refused:
        assert fastlayout.parse(variant.encode()) is None, variant


@given(st.text())
@example("-")  # a sequence entry if written plain
@example("@a")  # `@` is reserved: no plain scalar starts with it
def test_every_scalar_the_emitter_writes_reads_back_as_the_same_string(text):
    """`fastlayout.yaml_scalar` (recipients in store files, recipients.yaml): PyYAML reads the
    exact string back, whether it is written plain or quoted."""
    from devsecrets.fastlayout import yaml_scalar

    if "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return  # not representable in a YAML stream at all
    assert yamlload.load(f"k: {yaml_scalar(text)}\n".encode()) == {"k": text}

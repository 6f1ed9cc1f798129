"""Parsers for exactly the text layouts `sopsfile.emit` and `store._emit_recipients` write.

Input: file bytes. Output: the tree PyYAML's BaseLoader would build from them (every scalar a
str), or None when the text deviates from the layout in any way, in which case the caller
uses the full YAML reader (`store.yamlload`). It exists so `get` and `set` need not import
PyYAML; it imports nothing itself. tests/test_fastlayout.py checks it against that reader on
generated and edited files.

What it accepts in a store file, line by line (ASCII only, `\\n` line ends, no comments,
no tabs, nothing else):

    NAME: ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]     (or NAME: "")
    sops:
        age:
            - recipient: age1…
              enc: |
                -----BEGIN AGE ENCRYPTED FILE-----
                <base64 lines>
                -----END AGE ENCRYPTED FILE-----
            (more stanzas)
        lastmodified: "YYYY-MM-DDTHH:MM:SSZ"
        mac: ENC[AES256_GCM,…]
        unencrypted_suffix: _unencrypted
        version: N.N.N

So it can hold no alias, anchor, tag, duplicate key, flow collection or multi-document stream,
and the caller caps its size before calling it.
"""

from __future__ import annotations

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME = _ALNUM | frozenset("_.-")
_MEMBER = _ALNUM | frozenset("._@-")
_B64 = _ALNUM | frozenset("+/=")
_ENC = _B64 | frozenset(",:_")
_DIGITS = frozenset("0123456789")
_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
_END = "-----END AGE ENCRYPTED FILE-----"
_STANZA = "        - recipient: "
_ENC_LINE = "          enc: |"
_BODY = " " * 12
_PLAIN_SCALAR = _ALNUM | frozenset("_.+/=@-")


def parse(text: bytes) -> dict[str, object] | None:
    try:
        lines = text.decode("ascii").split("\n")
    except UnicodeDecodeError:
        return None
    if lines[-1] != "":  # the file ends with exactly one newline
        return None
    lines.pop()
    try:
        return _parse(lines)
    except IndexError:  # ran off the end: truncated
        return None


def _parse(lines: list[str]) -> dict[str, object] | None:
    name, sep, value = lines[0].partition(": ")
    if not sep or not _is_name(name):
        return None
    if value == '""':
        value = ""
    elif not _is_enc(value):
        return None
    if lines[1] != "sops:" or lines[2] != "    age:":
        return None
    i = 3
    stanzas: list[dict[str, str]] = []
    while lines[i].startswith(_STANZA):
        recipient = lines[i][len(_STANZA) :]
        if not (recipient.startswith("age1") and set(recipient) <= _ALNUM):
            return None
        if lines[i + 1] != _ENC_LINE or lines[i + 2] != _BODY + _BEGIN:
            return None
        i += 3
        body = [_BEGIN]
        while lines[i].startswith(_BODY):
            line = lines[i][len(_BODY) :]
            if line != _END and not (line and set(line) <= _B64):
                return None
            body.append(line)
            i += 1
            if line == _END:
                break
        if body[-1] != _END:
            return None
        stanzas.append({"recipient": recipient, "enc": "\n".join(body) + "\n"})
    if not stanzas:
        return None
    stamp = lines[i].removeprefix('    lastmodified: "')
    if stamp == lines[i] or not _is_stamp(stamp):
        return None
    mac = lines[i + 1].removeprefix("    mac: ")
    if mac == lines[i + 1] or not _is_enc(mac):
        return None
    if lines[i + 2] != "    unencrypted_suffix: _unencrypted":
        return None
    version = lines[i + 3].removeprefix("    version: ")
    if version == lines[i + 3] or not _is_version(version) or len(lines) != i + 4:
        return None
    return {
        name: value,
        "sops": {
            "age": stanzas,
            "lastmodified": stamp[:-1],
            "mac": mac,
            "unencrypted_suffix": "_unencrypted",
            "version": version,
        },
    }


def emit(
    name: str,
    value: str,
    stanzas: list[tuple[str, str]],
    lastmodified: str,
    mac: str,
    version: str,
) -> bytes:
    """The sops 3.11 layout (what `parse` reads): `stanzas` are (recipient, armored age file).
    The one emitter: `store.sopsfile.emit` and the lean `set` (`fastset`) both call it."""
    lines = [name + ": " + (value or '""'), "sops:", "    age:"]
    for recipient, enc in stanzas:
        lines.append(f"        - recipient: {yaml_scalar(recipient)}")
        lines.append("          enc: |")
        lines.extend("            " + line for line in enc.strip("\n").split("\n"))
    lines += [
        f'    lastmodified: "{lastmodified}"',
        f"    mac: {mac}",
        "    unencrypted_suffix: _unencrypted",
        f"    version: {version}",
    ]
    return ("\n".join(lines) + "\n").encode()


def yaml_scalar(text: str) -> str:
    """`text` as a YAML scalar (read back with every scalar a string): plain when it needs
    no quoting, else
    double-quoted with every character outside printable ASCII escaped (as json.dumps does
    for ASCII text; json's surrogate pairs for characters beyond U+FFFF are not YAML)."""
    # plain, unless it would read as something else: `@` starts no plain scalar (reserved),
    # and a lone `-` is a sequence entry
    if text and set(text) <= _PLAIN_SCALAR and text[0] != "@" and text != "-":
        return text
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def parse_recipients(text: bytes) -> dict[str, str] | None:
    """recipients.yaml as `store._emit_recipients` writes it: `# ` comment lines of printable
    ASCII, then `member: age1…` lines with distinct members. None for anything else."""
    try:
        lines = text.decode("ascii").split("\n")
    except UnicodeDecodeError:
        return None
    if lines.pop() != "":
        return None
    members: dict[str, str] = {}
    for line in lines:
        if line.startswith("# ") and not members:
            if not line.isprintable():
                return None
            continue
        member, sep, key = line.partition(": ")
        if (
            not sep
            or not _is_member(member)
            or member in members
            or not (key.startswith("age1") and set(key) <= _ALNUM)
        ):
            return None
        members[member] = key
    return members or None


def _is_member(member: str) -> bool:
    return 0 < len(member) <= 64 and member[0] in _ALNUM and set(member) <= _MEMBER


def _is_name(name: str) -> bool:
    """A plain YAML key that cannot be anything but a string, and not the metadata key."""
    return (
        0 < len(name) <= 64
        and name[0] in _ALNUM
        and name[-1] in _ALNUM
        and set(name) <= _NAME
        and name != "sops"
    )


def _is_enc(value: str) -> bool:
    return (
        value.startswith("ENC[AES256_GCM,data:")
        and value.endswith("]")
        and (set(value[4:-1]) <= _ENC)
    )


def _is_stamp(stamp: str) -> bool:
    """`YYYY-MM-DDTHH:MM:SSZ"`: already the normalised form the MAC authenticates."""
    digits = stamp[0:4] + stamp[5:7] + stamp[8:10] + stamp[11:13] + stamp[14:16] + stamp[17:19]
    return (
        len(stamp) == 21
        and stamp[4] + stamp[7] + stamp[10] + stamp[13] + stamp[16] + stamp[19:] == '--T::Z"'
        and set(digits) <= _DIGITS
    )


def _is_version(version: str) -> bool:
    parts = version.split(".")
    return len(parts) == 3 and all(p and len(p) <= 9 and set(p) <= _DIGITS for p in parts)

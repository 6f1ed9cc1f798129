"""The text of one store file: a SOPS YAML document holding exactly one secret.

Input: file bytes. Output: `SopsDocument` (ciphertext and metadata, no plaintext), and back.
No crypto here. Reading and writing follow sops 3.11 (ARCHITECTURE.md, "The SOPS format"),
with a fixed text layout (4-space indent, `enc: |` blocks, quoted lastmodified) because
sops' own files look so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devsecrets import fastlayout
from devsecrets.errors import IntegrityError

SOPS_VERSION = "3.11.0"
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")
_RULE_KEYS = (
    "unencrypted_suffix",
    "encrypted_suffix",
    "unencrypted_regex",
    "encrypted_regex",
    "unencrypted_comment_regex",
    "encrypted_comment_regex",
)


@dataclass(frozen=True, slots=True)
class AgeStanza:
    recipient: str
    enc: str


@dataclass(frozen=True, slots=True)
class SopsDocument:
    name: str
    value: str  # "" or an ENC[...] string
    age: tuple[AgeStanza, ...]
    lastmodified: str  # normalised to YYYY-MM-DDTHH:MM:SSZ, the MAC's AAD
    mac: str
    version: str


def parse(text: bytes, where: str) -> SopsDocument:
    # The layout devsecrets writes, read without PyYAML; anything else goes through it.
    tree: Any = fastlayout.parse(text)
    if tree is None:
        import yaml

        from devsecrets.store import yamlload

        try:
            # BaseLoader semantics keep every scalar as written: no YAML 1.1 surprises.
            tree = yamlload.load(text)
        except yaml.YAMLError as e:
            raise IntegrityError(
                f"integrity check failed for {where}: not a SOPS YAML file ({yamlload.reason(e)})"
            ) from e
    if not isinstance(tree, dict) or not isinstance(tree.get("sops"), dict):
        raise IntegrityError(
            f"integrity check failed for {where}: not a SOPS file (no sops metadata)"
        )
    meta: dict[str, Any] = tree["sops"]
    keys = [k for k in tree if k != "sops"]
    if len(keys) != 1:
        raise IntegrityError(
            f"integrity check failed for {where}: "
            f"expected exactly one secret, found {len(keys)} keys"
        )
    name = keys[0]
    value = tree[name]
    if not isinstance(value, str):
        raise IntegrityError(
            f"integrity check failed for {where}: the value is not a single string"
        )
    if "key_groups" in meta or "shamir_threshold" in meta:
        raise IntegrityError(
            f"{where} uses sops key groups (Shamir), which devsecrets does not support"
        )
    rules = [k for k in _RULE_KEYS if k in meta]
    if len(rules) > 1:
        raise IntegrityError(f"integrity check failed for {where}: more than one encryption rule")
    if rules and not _rule_encrypts(rules[0], str(meta[rules[0]]), name):
        raise IntegrityError(
            f"integrity check failed for {where}: its {rules[0]} leaves the value in plaintext"
        )
    age = tuple(_age_stanzas(meta.get("age"), where))
    mac = meta.get("mac")
    if not isinstance(mac, str) or not mac:
        raise IntegrityError(f"integrity check failed for {where}: no MAC")
    version = meta.get("version")
    if not isinstance(version, str) or not _SEMVER.match(version):
        raise IntegrityError(f"integrity check failed for {where}: bad sops version")
    return SopsDocument(
        name=name,
        value=value,
        age=age,
        lastmodified=_normalise_time(meta.get("lastmodified"), where),
        mac=mac,
        version=version,
    )


def _rule_encrypts(rule: str, arg: str, name: str) -> bool:
    """sops.go shouldBeEncrypted for a one-key path (regexes are unanchored searches)."""
    if rule == "unencrypted_suffix":
        return not name.endswith(arg)
    if rule == "encrypted_suffix":
        return name.endswith(arg)
    if rule == "unencrypted_regex":
        return re.search(arg, name) is None
    if rule == "encrypted_regex":
        return re.search(arg, name) is not None
    return True  # comment rules decide by comments; our files have none


def _age_stanzas(raw: Any, where: str) -> list[AgeStanza]:
    if raw in (None, "", []):
        return []
    if not isinstance(raw, list):
        raise IntegrityError(f"integrity check failed for {where}: bad age metadata")
    stanzas = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("enc"), str):
            raise IntegrityError(f"integrity check failed for {where}: bad age stanza")
        stanzas.append(AgeStanza(recipient=str(item.get("recipient", "")), enc=item["enc"]))
    return stanzas


def _normalise_time(raw: Any, where: str) -> str:
    """sops parses lastmodified as RFC 3339 and re-formats it; that string is the MAC's AAD."""
    if not isinstance(raw, str):
        raise IntegrityError(f"integrity check failed for {where}: no lastmodified")
    try:
        parsed = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError as e:
        raise IntegrityError(f"integrity check failed for {where}: bad lastmodified") from e
    if parsed.tzinfo is None:
        raise IntegrityError(f"integrity check failed for {where}: lastmodified has no zone")
    return format_time(parsed)


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def emit(doc: SopsDocument) -> bytes:
    """The sops 3.11 layout (`fastlayout.emit`). json.dumps gives valid YAML double-quoted
    scalars where needed."""
    return fastlayout.emit(
        doc.name,
        doc.value,
        [(stanza.recipient, stanza.enc) for stanza in doc.age],
        doc.lastmodified,
        doc.mac,
        doc.version,
    )


def yaml_scalar(text: str) -> str:
    return fastlayout.yaml_scalar(text)


def newer_version(stored: str) -> str:
    """Keep a newer sops version a teammate's sops wrote; never write one older than ours."""
    ours = tuple(int(x) for x in _SEMVER.match(SOPS_VERSION).groups())  # type: ignore[union-attr]
    match = _SEMVER.match(stored)
    theirs = tuple(int(x) for x in match.groups()) if match else (0, 0, 0)
    return stored if theirs > ours else SOPS_VERSION

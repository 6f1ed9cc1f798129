"""Age recipients and data-key wrapping (ARCHITECTURE.md, "The SOPS format").

Each recipient gets a complete, armored age file holding the 32-byte data key, as sops writes it.
X25519 (`age1…`) and `ssh-ed25519` recipients only: sops 3.11 reads both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyrage

from devsecrets.errors import RecipientError
from devsecrets.store.cipher import DATA_KEY_SIZE
from devsecrets.store.sopsfile import AgeStanza


def parse_recipient(text: str) -> Any:  # a pyrage recipient: pyrage ships no type information
    text = text.strip()
    try:
        if text.startswith("age1"):
            return pyrage.x25519.Recipient.from_str(text)
        if text.startswith("ssh-ed25519 "):
            return pyrage.ssh.Recipient.from_str(text)
    except pyrage.RecipientError as e:
        raise RecipientError(f"not a valid age or ssh-ed25519 public key: {text[:24]}…") from e
    raise RecipientError(
        f"unsupported recipient {text[:24]}…",
        hint="use an age X25519 key (age1…) or an ssh-ed25519 public key",
    )


def wrap(data_key: bytes, recipient: str) -> AgeStanza:
    armored = pyrage.encrypt(data_key, [parse_recipient(recipient)], armored=True)
    return AgeStanza(recipient=recipient.strip(), enc=armored.decode())


def unwrap(stanzas: Sequence[AgeStanza], identities: Sequence[Any]) -> bytes | None:
    """The data key from the first stanza any identity opens, or None."""
    if not identities:
        return None
    for stanza in stanzas:
        try:
            key = pyrage.decrypt(stanza.enc.encode(), list(identities))
        except (pyrage.DecryptError, ValueError):
            continue
        if len(key) == DATA_KEY_SIZE:
            return bytes(key)
    return None

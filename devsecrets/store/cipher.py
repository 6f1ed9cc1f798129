"""AES-256-GCM leaves and the MAC, exactly as sops 3.11 writes them.

ARCHITECTURE.md, "The SOPS format".

Input: a 32-byte data key and plaintext bytes. Output: `ENC[AES256_GCM,...]` strings.
Never writes crypto by hand: AES-GCM is `cryptography`'s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from devsecrets.errors import IntegrityError

# sops aes/cipher.go: a 32-byte nonce, not GCM's usual 12. `sops edit` panics on shorter ones.
NONCE_SIZE = 32
DATA_KEY_SIZE = 32
_ENC = re.compile(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Leaf:
    """One parsed ENC[...] value; no plaintext here."""

    data: bytes
    iv: bytes
    tag: bytes
    type: str


def parse_leaf(text: str, where: str) -> Leaf:
    match = _ENC.match(text)
    if match is None:
        raise IntegrityError(f"integrity check failed for {where}: value is not encrypted")
    try:
        data, iv, tag = (base64.b64decode(match.group(i), validate=True) for i in (1, 2, 3))
    except binascii.Error as e:
        raise IntegrityError(f"integrity check failed for {where}: bad base64") from e
    if len(tag) != 16 or not iv:
        raise IntegrityError(f"integrity check failed for {where}: bad iv or tag")
    return Leaf(data=data, iv=iv, tag=tag, type=match.group(4))


def format_leaf(leaf: Leaf) -> str:
    b64 = base64.b64encode
    return (
        f"ENC[AES256_GCM,data:{b64(leaf.data).decode()},iv:{b64(leaf.iv).decode()},"
        f"tag:{b64(leaf.tag).decode()},type:{leaf.type}]"
    )


def encrypt(key: bytes, plaintext: bytes, aad: bytes, iv: bytes | None = None) -> Leaf:
    """Encrypt as a `type:str` leaf; pass the previous IV to get byte-identical output."""
    nonce = iv if iv is not None else os.urandom(NONCE_SIZE)
    sealed = AESGCM(key).encrypt(nonce, plaintext, aad)
    return Leaf(data=sealed[:-16], iv=nonce, tag=sealed[-16:], type="str")


def decrypt(key: bytes, leaf: Leaf, aad: bytes, where: str) -> bytes:
    try:
        return AESGCM(key).decrypt(leaf.iv, leaf.data + leaf.tag, aad)
    except (InvalidTag, ValueError) as e:
        raise IntegrityError(
            f"integrity check failed for {where}: value does not authenticate"
        ) from e


def mac_hex(values: list[bytes]) -> str:
    """sops' MAC: SHA-512 over the plaintext values in file order, no keys, upper-case hex."""
    digest = hashlib.sha512()
    for value in values:
        digest.update(value)
    return digest.hexdigest().upper()


def macs_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())

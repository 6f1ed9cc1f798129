"""App-side helper: read a secret the way it is delivered under Swarm and devsecrets.

Copy it into your application. `read_secret("db_password")` returns the bytes of
`$DB_PASSWORD_FILE` if that variable is set, else of `/run/secrets/db_password`.
The same code runs unchanged on a laptop (`devsecrets up`, `devsecrets run`) and on a swarm.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def file_variable(name: str) -> str:
    """db_password -> DB_PASSWORD_FILE (as `devsecrets run` names them)."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_FILE"


def read_secret(name: str, *, strip_newline: bool = False) -> bytes:
    path = os.environ.get(file_variable(name)) or f"/run/secrets/{name}"
    value = Path(path).read_bytes()
    return value.rstrip(b"\n") if strip_newline else value

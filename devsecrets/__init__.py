"""devsecrets: run a Docker Swarm stack locally with real secrets, safely."""

from __future__ import annotations

# A literal, not importlib.metadata: `devsecrets get` must start fast (see bench/).
__version__ = "0.1.0"

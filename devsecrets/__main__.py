from __future__ import annotations

from devsecrets.cli import main

raise SystemExit(main())

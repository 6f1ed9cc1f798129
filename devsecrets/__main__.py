from __future__ import annotations

from devsecrets.entry import main

raise SystemExit(main())

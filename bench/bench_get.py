#!/usr/bin/env python3
"""`devsecrets get` / `set` against the sops Go binary, and a batch read against a sops loop.

Three comparisons, each paired and interleaved (A B, B A, ...) in one run:
- get:   `devsecrets get NAME` vs `sops decrypt --extract '["NAME"]' FILE`, same file, same key.
- set:   `devsecrets set NAME` (value on stdin) vs `sops set --value-stdin FILE '["NAME"]'`, a
         new value every run (so both really re-encrypt), on two copies of the same store file.
- batch: one `devsecrets get --json N0 ... N99` vs 100 `sops decrypt --extract` run one after
         another, timed from the first spawn to the last exit.
Timing: from just before spawning the process to its exit with output drained (bench/_common).
devsecrets runs from a normal (non-editable) install in a venv; see bench/_common.py.
Floors, timed in the same loop: `python3 -c pass`, `python3 -I -S -c pass`, and a process that
only imports AESGCM and pyrage (what any Python get must load).
Usage: python3 bench/bench_get.py [--runs N] [--batch-runs N] [--only get,set,batch]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

BATCH = 100
# Writes BATCH secrets through the store API of the installed devsecrets (fast set-up).
FILL = """
import os, sys
from pathlib import Path
from devsecrets.keys import find_identities
from devsecrets.store import find_store
store = find_store(Path.cwd())
ids = find_identities(os.environ)
for i in range(int(sys.argv[1])):
    store.write(f"s{i:03d}", f"value-{i:03d}-".encode() + os.urandom(8).hex().encode(), ids)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=31)
    parser.add_argument("--batch-runs", type=int, default=7)
    parser.add_argument(
        "--only", default="get,set,batch", help="comma-separated: get, set, batch (default all)"
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    bindir = _common.normal_install()
    devsecrets, sops = str(bindir / "devsecrets"), _common.real_sops()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8"}
        _common.run([devsecrets, "init"], env=env, cwd=root)
        value = os.urandom(24).hex().encode()
        _common.run([devsecrets, "set", "db_password"], env=env, cwd=root, stdin=value)
        store_file = root / ".devsecrets" / "db_password.sops.yaml"
        sops_copy = root / "sops-copy" / "db_password.sops.yaml"  # sops set writes here
        sops_copy.parent.mkdir()
        shutil.copy(store_file, sops_copy)

        def sops_get(path: Path, name: str) -> list[str]:
            return [
                sops,
                "--disable-version-check",
                "decrypt",
                "--extract",
                f'["{name}"]',
                str(path),
            ]

        def new_value(r: int) -> bytes:
            return f"v{r}-".encode() + os.urandom(12).hex().encode()

        contestants = {
            "devsecrets get": lambda r: _common.run(
                [devsecrets, "get", "db_password"], env=env, cwd=root, expect=value
            ),
            "sops decrypt --extract": lambda r: _common.run(
                sops_get(store_file, "db_password"), env=env, cwd=root, expect=value
            ),
            "devsecrets set": lambda r: _common.run(
                [devsecrets, "set", "db_password"], env=env, cwd=root, stdin=new_value(r)
            ),
            "sops set --value-stdin": lambda r: _common.run(
                [
                    sops,
                    "--disable-version-check",
                    "set",
                    "--value-stdin",
                    str(sops_copy),
                    '["db_password"]',
                ],
                env=env,
                cwd=root,
                stdin=json.dumps(new_value(r).decode()).encode(),
            ),
            **{
                name: _common.command(argv, env=env, cwd=root)
                for name, argv in _common.floor_commands(bindir).items()
            },
        }
        print(f"bench_get: {_common.machine()}; devsecrets from {bindir}; sops {sops}")
        print(f"get/set: {args.runs} rounds, each contestant once per round, order alternating")
        # get first: `set` changes the value, and `get` checks what it prints
        get_names = ["devsecrets get", "sops decrypt --extract"]
        floors = [n for n in contestants if n.startswith("floor")]
        if "get" in only:
            samples = _common.paired({n: contestants[n] for n in get_names + floors}, args.runs)
            _common.report(samples)
            _common.ratio(samples, "devsecrets get", "sops decrypt --extract", "<= 2.0")
        if "set" in only:
            set_names = ["devsecrets set", "sops set --value-stdin"]
            set_samples = _common.paired({n: contestants[n] for n in set_names}, args.runs)
            _common.report(set_samples)
            _common.ratio(set_samples, "devsecrets set", "sops set --value-stdin", "<= 2.5")
        if "batch" not in only:
            return

        # batch
        subprocess.run(
            [str(bindir / "python3"), "-c", FILL, str(BATCH)], env=env, cwd=root, check=True
        )
        names = [f"s{i:03d}" for i in range(BATCH)]
        files = [root / ".devsecrets" / f"{n}.sops.yaml" for n in names]
        expected = {
            n: subprocess.run(
                [devsecrets, "get", n], env=env, cwd=root, capture_output=True, check=True
            ).stdout.decode()
            for n in names
        }
        got = subprocess.run(
            [devsecrets, "get", "--json", *names],
            env=env,
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
        if json.loads(got) != expected:
            sys.exit("bench: get --json printed the wrong mapping")

        def sops_loop(r: int) -> float:
            start = time.perf_counter()
            for n, f in zip(names, files, strict=True):
                _common.run(sops_get(f, n), env=env, cwd=root, expect=expected[n].encode())
            return time.perf_counter() - start

        batch = _common.paired(
            {
                f"devsecrets get --json ({BATCH} names)": lambda r: _common.run(
                    [devsecrets, "get", "--json", *names], env=env, cwd=root
                ),
                f"loop of {BATCH} sops decrypt --extract": sops_loop,
            },
            args.batch_runs,
        )
        print(f"batch: {args.batch_runs} rounds; the sops loop: first spawn to last exit")
        a, b = _common.report(batch).values()
        print(f"  batch speed-up (sops loop / devsecrets): {b / a:.1f}x; target >= 10x")


if __name__ == "__main__":
    main()

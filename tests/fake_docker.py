"""A stand-in `docker` for deploy's unit tests: a tiny in-memory swarm kept in a JSON file.

It records every call (argv, environment, and only the sha256 and size of stdin) in
FAKE_DOCKER_LOG, so a test can prove a value went in on stdin and nowhere else. `docker compose`
is handed to the real docker (FAKE_REAL_DOCKER), which only reads the stack.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_DOCKER_STATE"])
LOG = Path(os.environ["FAKE_DOCKER_LOG"])


def load() -> dict:
    if STATE.exists():
        return json.loads(STATE.read_text())
    return {"secrets": {}, "services": {}, "clock": 0}


def main(argv: list[str]) -> int:
    if argv[:1] == ["compose"]:
        real = os.environ["FAKE_REAL_DOCKER"]
        os.execv(real, [real, *argv])  # noqa: S606 - the real docker, argv as given
    stdin = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
    with LOG.open("a") as log:
        entry = {"argv": argv, "env": dict(os.environ)}
        entry["stdin_sha256"] = hashlib.sha256(stdin).hexdigest()
        entry["stdin_size"] = len(stdin)
        log.write(json.dumps(entry) + "\n")
    state = load()
    code = handle(argv, stdin, state)
    STATE.write_text(json.dumps(state))
    return code


def handle(argv: list[str], stdin: bytes, state: dict) -> int:
    secrets, services = state["secrets"], state["services"]
    head = argv[:2]
    if head == ["info", "--format"]:
        swarm_state = os.environ.get("FAKE_SWARM_STATE", "active")
        swarm = {"LocalNodeState": swarm_state, "ControlAvailable": swarm_state == "active"}
        print(json.dumps({"Name": "fake", "Swarm": swarm}))
    elif head == ["context", "show"]:
        print("default")
    elif head == ["context", "inspect"]:
        print("unix:///fake.sock")
    elif head == ["secret", "ls"]:
        print("\n".join(secrets))
    elif head == ["secret", "inspect"]:
        print(json.dumps([secrets[i] for i in argv[2:]]))
    elif head == ["secret", "create"]:
        name = argv[-2]
        labels = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--label")
        if any(s["Spec"]["Name"] == name for s in secrets.values()):
            print(f"secret {name} already exists", file=sys.stderr)
            return 1
        state["clock"] += 1
        sid = f"id{state['clock']}"
        secrets[sid] = {
            "ID": sid,
            "CreatedAt": f"2026-01-01T00:00:{state['clock']:02d}Z",
            "Spec": {"Name": name, "Labels": labels},
        }
        state.setdefault("values", {})[name] = hashlib.sha256(stdin).hexdigest()
    elif head == ["secret", "rm"]:
        name = argv[2]
        # stricter than Swarm, which checks service specs only: a task that has not rolled
        # over yet still holds the old version, so removing it early must fail here
        if any(name in svc["refs"] or svc.get("pending") for svc in services.values()):
            print(f"secret '{name}' is in use by the following service: x", file=sys.stderr)
            return 1
        for sid, s in list(secrets.items()):
            if s["Spec"]["Name"] == name:
                del secrets[sid]
    elif head == ["service", "ls"]:
        wanted = [a.split("=", 2)[2] for a in argv if a.startswith("label=")]
        print("\n".join(k for k, v in services.items() if not wanted or v["stack"] in wanted))
    elif head == ["service", "inspect"]:
        print(json.dumps([service_json(k, services[k]) for k in argv[2:]]))
    elif head == ["stack", "config"]:
        pass
    elif head == ["stack", "deploy"]:
        if os.environ.get("FAKE_DEPLOY_FAIL"):
            print("network no-such-net not found", file=sys.stderr)
            return 1
        override = stdin.decode()
        refs = [ln.split("name: ", 1)[1] for ln in override.splitlines() if "name: " in ln]
        key = f"{argv[-1]}_api"
        before = services.get(key, {}).get("refs")
        rolling = before is not None and before != refs
        services[key] = {"stack": argv[-1], "refs": refs, "old": before, "pending": 2 * rolling}
    elif head == ["stack", "ps"]:
        for v in services.values():  # the rolling update advances as it is watched
            v["pending"] = max(0, v.get("pending", 0) - 1)
        print("\n".join(f"t-{k}" for k, v in services.items() if v["stack"] == argv[-1]))
    elif head == ["inspect", "--type"]:
        tasks = []
        for t in argv[3:]:
            svc = services[t.removeprefix("t-")]
            refs = svc["old"] if svc.get("pending") else svc["refs"]
            spec = {"ContainerSpec": {"Secrets": [{"SecretName": r} for r in refs]}}
            tasks.append(
                {"ServiceID": t.removeprefix("t-"), "Status": {"State": "running"}, "Spec": spec}
            )
        print(json.dumps(tasks))
    else:
        print(f"fake docker: unhandled {argv}", file=sys.stderr)
        return 99
    return 0


def service_json(key: str, svc: dict) -> dict:
    secrets = [{"SecretName": r} for r in svc["refs"]]
    return {
        "ID": key,
        "UpdateStatus": {"State": "updating" if svc.get("pending") else "completed"},
        "Spec": {
            "Name": key,
            "Labels": {"com.docker.stack.namespace": svc["stack"]},
            "Mode": {"Replicated": {"Replicas": 1}},
            "TaskTemplate": {"ContainerSpec": {"Secrets": secrets}},
        },
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``make run``: the whole hub on one machine, no Docker.

Four processes with SQLite files under ``var/``, one log stream prefixed by service; SIGINT
(Ctrl-C) or SIGTERM stops them all, however it was started. On first start it seeds the demo and
prints the keys once. Everything under ``var/`` is private to the user (files 0600, folders 0700).
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path

from scripts.demo import DEMO_LAYER, seed
from scripts.hub import DEFAULT_PORTS, REPO, Hub, HubKeys

VAR = Path(os.environ.get("CSP_VAR_DIR", REPO / "var"))


def _ports() -> dict[str, int]:
    return {
        name: int(os.environ.get(f"CSP_{name.upper()}_PORT", port))
        for name, port in DEFAULT_PORTS.items()
    }


def _secret_file(path: Path, value: str | None = None) -> str:
    """A secret kept in ``path`` (``value``, else random): created 0600 before it is written."""
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(value or secrets.token_urlsafe(32))
    return path.read_text().strip()


def _hub_keys() -> HubKeys:
    """Each service's token key and the record and cell key secrets, kept under var/. A var/ made
    before them keeps its record keys: its former internal secret becomes both secrets."""
    legacy = VAR / "internal-secret"
    earlier = legacy.read_text().strip() if legacy.exists() else None
    fresh = HubKeys.generate()
    seeds = {
        name: _secret_file(VAR / f"{name}-token-key", seed)
        for name, seed in fresh.token_seeds.items()
    }
    return HubKeys(
        seeds,
        _secret_file(VAR / "record-key-secret", earlier),
        _secret_file(VAR / "cell-key-secret", earlier),
    )


def _linkage_key() -> str:
    """Ingest's own key for person pseudonyms (never a token key), kept under var/."""
    return _secret_file(VAR / "linkage-key")


def private_var(folder: Path) -> None:
    """Make ``folder`` and everything already in it private; the umask covers what comes next."""
    os.umask(0o077)
    folder.mkdir(parents=True, exist_ok=True)
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod(0o700 if path.is_dir() else 0o600)


def _stop(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    # `make run &` from a script starts with SIGINT ignored: take both signals back explicitly.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    private_var(VAR)
    fresh = not (VAR / "gateway.db").exists()
    seeded_marker = VAR / "demo-seeded"
    admin_key = os.environ.get("CSP_ADMIN_KEY") or (
        f"csp_ops_{secrets.token_urlsafe(24)}" if fresh else ""
    )
    first_start = not seeded_marker.exists()
    if first_start and not admin_key:
        print(
            "The demo was never seeded and the operators' key is not known: set CSP_ADMIN_KEY "
            "or run `make clean` to start afresh.",
            file=sys.stderr,
        )
        return 2
    # Any CSP_* setting in the caller's environment reaches the services (README "Settings").
    extra = {key: value for key, value in os.environ.items() if key.startswith("CSP_")}
    if admin_key:
        extra["CSP_ADMIN_KEY"] = admin_key
    extra.setdefault("CSP_INGEST_LINKAGE_KEY", _linkage_key())
    databases = {
        name: os.environ.get(f"CSP_{name.upper()}_DATABASE_URL", f"sqlite:///{VAR / name}.db")
        for name in DEFAULT_PORTS
    }
    hub = Hub(_ports(), databases, _hub_keys(), extra)
    try:
        hub.start()
        gateway = hub.gateway_url
        if first_start:
            keys = seed(gateway, admin_key)
            seeded_marker.write_text("seeded\n")
            _print_welcome(gateway, admin_key, keys)
        else:
            print(f"\nThe hub is up at {gateway} (demo seeded earlier; its keys were shown then).")
        print("Ctrl-C (or SIGTERM) stops every service.\n", flush=True)
        while all(service.alive() for service in hub.services.values()):
            time.sleep(0.5)
        print("A service stopped; stopping the others.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        hub.stop()


def _print_welcome(gateway: str, admin_key: str, keys: dict[str, str]) -> None:
    police, council = keys["demo-police"], keys["demo-council"]
    print(
        f"""
==================================================================================
 CSP hub is up at {gateway}   (DEMO DATA: synthetic, not about real people)
 These keys are shown once; the hub stores only their hashes.

   export CSP_ADMIN_KEY={admin_key}
   export POLICE_KEY={police}
   export COUNCIL_KEY={council}

 Try:
   curl -s {gateway}/v1/me -H "Authorization: Bearer $COUNCIL_KEY"
   curl -s "{gateway}/v1/datasets/police-crime/aggregates?geography={DEMO_LAYER}\\
&period=month&from=2024-01-01&to=2024-06-30" -H "Authorization: Bearer $COUNCIL_KEY"
==================================================================================
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())

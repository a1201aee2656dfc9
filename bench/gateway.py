"""Gateway throughput: an authorised aggregates query and a trivial read, through the gateway vs
straight to the backend, and the audit's cost (audit on vs off). ``python -m bench.gateway``.

Starts the real services as processes on free 127.0.0.1 ports (fresh SQLite files), seeds the demo
through the public API, then drives each target with the same bounded load generator (a separate
process: a fixed number of requests at a fixed concurrency over aiohttp). The baseline of each
ratio is measured in the same run: the same request sent straight to the backend with the token the
gateway would forward, or to a second gateway started with the audit switched off. Each pair is
measured in turns, alternating, and each side's throughput is its requests over its time across
all turns; the audit pair, the smallest difference, gets eight turns of 4,000 requests a side.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.results import record
from scripts.hub import REPO, Hub, HubKeys, ServiceProcess, free_port, service_environment
from shared.tokens import HEADER, TokenKey, issue_token

# Aggregates are a real database-backed read (about 100 req/s here), so fewer of them.
REQUESTS = int(os.environ.get("CSP_BENCH_GATEWAY_REQUESTS", "3000"))
AGGREGATE_REQUESTS = int(os.environ.get("CSP_BENCH_GATEWAY_AGGREGATE_REQUESTS", "800"))
AUDIT_REQUESTS = int(os.environ.get("CSP_BENCH_GATEWAY_AUDIT_REQUESTS", "4000"))
AUDIT_TURNS = 8
CONCURRENCY = int(os.environ.get("CSP_BENCH_GATEWAY_CONCURRENCY", "32"))
WARMUP = 200
ROUNDS = 2  # turns per target of a pair, alternating
AGGREGATES = (
    "/v1/datasets/police-crime/aggregates?geography=demo-grid&period=month"
    "&from=2024-01-01&to=2024-06-30"
)
GATEWAY_ENV = {"CSP_GATEWAY_RATE_LIMIT": "100000000/second", "CSP_GATEWAY_LOG_LEVEL": "WARNING"}


# --- the load generator (runs in its own process) -------------------------------------------


async def _drive(url: str, headers: dict[str, str], total: int, concurrency: int) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    issued = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(count: int, keep: bool) -> None:
            nonlocal issued
            while issued < count:
                issued += 1
                started = time.perf_counter()
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    status = response.status
                if keep:
                    latencies.append(time.perf_counter() - started)
                    statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker(WARMUP, False) for _ in range(concurrency)))
        issued = 0
        began = time.perf_counter()
        await asyncio.gather(*(worker(total, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "statuses": statuses,
    }


def measure(url: str, headers: dict[str, str], total: int | None = None) -> dict[str, Any]:
    total = total or (AGGREGATE_REQUESTS if "/aggregates" in url else REQUESTS)
    spec = json.dumps({"url": url, "headers": headers, "total": total, "c": CONCURRENCY})
    done = subprocess.run(
        [sys.executable, "-m", "bench.gateway", "--load", spec],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    bad = {s: n for s, n in result["statuses"].items() if s != "200"}
    if bad:
        raise RuntimeError(f"{url} answered {bad}")
    return result


# --- the services ---------------------------------------------------------------------------


def real_services_work() -> bool:
    try:
        for name in ("agreements", "ingest", "depersonalise"):
            importlib.import_module(f"services.{name}.main")
    except ImportError:
        return False
    return True


def start_real(folder: Path, secret: HubKeys, admin_key: str) -> tuple[Hub, ServiceProcess]:
    names = ("gateway", "agreements", "ingest", "depersonalise")
    ports = {name: free_port() for name in names}
    databases = {name: f"sqlite:///{folder / name}.db" for name in names}
    hub = Hub(ports, databases, secret, {"CSP_ADMIN_KEY": admin_key, **GATEWAY_ENV}, sink=_quiet)
    hub.start()
    env = service_environment(ports, databases, secret, {"CSP_ADMIN_KEY": admin_key})["gateway"]
    env.update(GATEWAY_ENV, CSP_GATEWAY_PORT=str(free_port()), CSP_GATEWAY_AUDIT_ENABLED="false")
    unaudited = ServiceProcess("gateway", int(env["CSP_GATEWAY_PORT"]), env, sink=_quiet)
    unaudited.start()
    unaudited.wait_ready()
    return hub, unaudited


def _quiet(line: str) -> None:
    if '"level": "error"' in line or "Traceback" in line:
        print(line, file=sys.stderr)


def seed(gateway: str, admin_key: str) -> dict[str, str]:
    from scripts.demo import seed as seed_demo

    # seed_demo waits until every demo record is depersonalised; the aggregates answer then
    # counts them all (its total is not published beside a suppressed cell, so not checked).
    keys = seed_demo(gateway, admin_key)
    council = {"Authorization": f"Bearer {keys['demo-council']}"}
    answer = httpx.get(gateway + AGGREGATES, headers=council, timeout=10)
    if answer.status_code != 200:
        raise RuntimeError(f"the demo aggregates answered {answer.status_code}")
    return keys


def direct_token(secret: TokenKey, agreements: str, agency: str, key_id: str) -> dict[str, str]:
    """The token the gateway would forward for this agency's aggregates read."""
    service = issue_token(secret, {"sub": "gateway", "roles": ["service"]})
    decision = httpx.post(
        agreements + "/internal/decisions",
        json={"agency": agency, "action": "read", "dataset": "police-crime",
              "level": "aggregate", "purpose": None, "fields": None},
        headers={HEADER: service}, timeout=10,
    ).json()  # fmt: skip
    claims = {
        "sub": agency, "roles": ["agency"], "key_id": key_id, "request_id": "bench",
        "action": "read", "dataset": "police-crime", "level": "aggregate",
        **{k: decision.get(k) for k in ("rule", "agreement", "version", "fields", "providers",
                                          "retention_days", "window", "purpose")},
    }  # fmt: skip
    return {HEADER: issue_token(secret, claims, ttl_seconds=3600)}


def compare(
    label: str,
    via: tuple[str, dict[str, str]],
    base: tuple[str, dict[str, str]],
    rounds: int = ROUNDS,
    total: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both targets measured in turns (the order alternating, so neither side always runs first),
    each side's throughput taken over all its turns together: a slow spell of the machine falls
    on both sides instead of deciding the ratio."""
    via_runs: list[dict[str, Any]] = []
    base_runs: list[dict[str, Any]] = []
    for turn in range(rounds):
        if turn % 2:
            via_runs.append(measure(*via, total))
            base_runs.append(measure(*base, total))
        else:
            base_runs.append(measure(*base, total))
            via_runs.append(measure(*via, total))
    via_sum, base_sum = _overall(via_runs), _overall(base_runs)
    print(
        f"{label}: {via_sum['rps']:.0f} req/s (p50 {via_sum['p50_ms']:.1f} ms, p99 "
        f"{via_sum['p99_ms']:.1f} ms) vs {base_sum['rps']:.0f} req/s (p50 "
        f"{base_sum['p50_ms']:.1f} ms, p99 {base_sum['p99_ms']:.1f} ms); turns "
        + ", ".join(
            f"{v['rps']:.0f}/{b['rps']:.0f}" for v, b in zip(via_runs, base_runs, strict=True)
        ),
        flush=True,
    )
    return via_sum, base_sum


def _overall(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests over time across every turn; latencies are the median turn's."""
    requests = sum(run["requests"] for run in runs)
    seconds = sum(run["requests"] / run["rps"] for run in runs)
    return {
        "rps": requests / seconds,
        "p50_ms": statistics.median(run["p50_ms"] for run in runs),
        "p99_ms": statistics.median(run["p99_ms"] for run in runs),
        "turns": [round(run["rps"], 1) for run in runs],
    }


def main() -> int:
    hub_keys = HubKeys.generate()
    admin_key = f"csp_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    with tempfile.TemporaryDirectory(prefix="csp-bench-gateway-") as folder:
        if not real_services_work():
            print("the backends are not importable: nothing to measure", file=sys.stderr)
            return 1
        hub, unaudited = start_real(Path(folder), hub_keys, admin_key)
        try:
            gateway = hub.gateway_url
            keys = seed(gateway, admin_key)
            council = {"Authorization": f"Bearer {keys['demo-council']}"}
            key_id = keys["demo-council"].split("_")[1]
            agreements = hub["agreements"].url
            direct = direct_token(hub_keys.token_key("gateway"), agreements, "demo-council", key_id)
            report(
                backend="real services",
                aggregates=compare(
                    "aggregates via gateway vs direct to depersonalise",
                    (gateway + AGGREGATES, council),
                    (hub["depersonalise"].url + AGGREGATES, direct),
                ),
                trivial=compare(
                    "GET /v1/me via gateway vs direct to agreements",
                    (gateway + "/v1/me", council),
                    (agreements + "/v1/me", direct),
                ),
                # On the trivial read the gateway, not the backend, limits throughput.
                audit=compare(
                    "GET /v1/me via gateway, audit on vs off",
                    (gateway + "/v1/me", council),
                    (unaudited.url + "/v1/me", council),
                    # The smallest difference measured here, so the most turns.
                    rounds=AUDIT_TURNS,
                    total=AUDIT_REQUESTS,
                ),
            )
        finally:
            unaudited.stop()
            hub.stop()
    return 0


def report(backend: str, **pairs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    common: dict[str, Any] = {"backend": backend, "concurrency": CONCURRENCY}
    via, base = pairs["aggregates"]
    record(
        "gateway_aggregates_throughput", via["rps"], "req/s", baseline=base["rps"], target=0.5,
        p50_ms=round(via["p50_ms"], 2), p99_ms=round(via["p99_ms"], 2),
        direct_p50_ms=round(base["p50_ms"], 2), direct_p99_ms=round(base["p99_ms"], 2),
        requests=AGGREGATE_REQUESTS, **common,
    )  # fmt: skip
    via, base = pairs["trivial"]
    record(
        "gateway_trivial_read_throughput", via["rps"], "req/s", baseline=base["rps"], target=0.5,
        p50_ms=round(via["p50_ms"], 2), p99_ms=round(via["p99_ms"], 2),
        direct_p50_ms=round(base["p50_ms"], 2), direct_p99_ms=round(base["p99_ms"], 2),
        requests=REQUESTS, route="GET /v1/me", **common,
    )  # fmt: skip
    on, off = pairs["audit"]
    record(
        "gateway_audit_on_vs_off_throughput", on["rps"], "req/s", baseline=off["rps"], target=0.9,
        p50_ms=round(on["p50_ms"], 2), p99_ms=round(on["p99_ms"], 2),
        off_p50_ms=round(off["p50_ms"], 2), off_p99_ms=round(off["p99_ms"], 2),
        requests=AUDIT_REQUESTS, turns=AUDIT_TURNS, on_turns=on["turns"], off_turns=off["turns"],
        route="GET /v1/me", **common,
    )  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--load":
        spec = json.loads(sys.argv[2])
        outcome = asyncio.run(_drive(spec["url"], spec["headers"], spec["total"], spec["c"]))
        print(json.dumps(outcome))
        sys.exit(0)
    sys.exit(main())

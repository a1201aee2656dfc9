"""Soak: eight providers push at once while 32 readers query aggregates and records.
``python -m bench.soak``.

Starts the four services as processes on free 127.0.0.1 ports with fresh databases, creates
eight provider agencies and one recipient under one agreement, loads the demo grid, then pushes
``CSP_BENCH_SOAK_ROWS`` rows (50,000 by default) per provider, all eight at once, while 32 reader
threads query aggregates and record pages until the pushes are answered (at most
``CSP_BENCH_SOAK_SECONDS``). Same-run baselines: one provider's push of the same size alone, and
the readers with no push running. Reports rows/s accepted, read p50/p99, errors (the target is 0),
the time until every batch is depersonalised, and each service's peak RSS; then the same on
PostgreSQL (``CSP_BENCH_PG_URL``) when it answers.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.ingest import bench_database
from bench.results import record
from scripts.demo import crime_agreement
from scripts.hub import DEFAULT_PORTS, Hub, HubKeys, free_port
from services.depersonalise.demo import demo_layer

ROWS = int(os.environ.get("CSP_BENCH_SOAK_ROWS", "50000"))
PROVIDERS = int(os.environ.get("CSP_BENCH_SOAK_PROVIDERS", "8"))
READERS = int(os.environ.get("CSP_BENCH_SOAK_READERS", "32"))
MAX_SECONDS = float(os.environ.get("CSP_BENCH_SOAK_SECONDS", "600"))
IDLE_READS = 400  # the readers' baseline, no push running
ADMIN_KEY = "csp_ops_soak-benchmark-operators-key"
LAYER = "soak-grid"
RECIPIENT = "soak-council"
AGGREGATES = (
    f"/v1/datasets/police-crime/aggregates?geography={LAYER}&period=month"
    "&from=2024-01-01&to=2024-06-30"
)
RECORDS = "/v1/datasets/police-crime/records?limit=100"
CATEGORIES = ("Burglary", "Robbery", "Vehicle crime", "Shoplifting")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def crimes_csv(provider: int, rows: int, prefix: str) -> bytes:
    lines = ["source_ref,occurred_at,category,easting,northing"]
    for n in range(rows):
        lines.append(
            f"{prefix}-{provider}-{n},2024-0{1 + n % 6}-{1 + n % 28:02d},"
            f"{CATEGORIES[n % 4]},{380_050 + (n * 37) % 5_900},{394_050 + (n * 53) % 5_900}"
        )
    return ("\n".join(lines) + "\n").encode()


def _ok(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 300:
        raise RuntimeError(f"{what}: {response.status_code} {response.text[:300]}")
    return dict(response.json()) if response.content else {}


def setup(gateway: str) -> tuple[list[str], str]:
    """Providers' keys and the recipient's key, under one active agreement; the grid served."""
    admin = bearer(ADMIN_KEY)
    providers = [f"soak-police-{i}" for i in range(PROVIDERS)]
    keys: dict[str, str] = {}
    with httpx.Client(base_url=gateway, timeout=120) as client:
        for code in [*providers, RECIPIENT]:
            kind = "local-authority" if code == RECIPIENT else "police"
            _ok(client.post("/v1/agencies", json={"code": code, "name": code, "kind": kind},
                            headers=admin), "agency")  # fmt: skip
            keys[code] = _ok(client.post(f"/v1/agencies/{code}/keys", headers=admin), "key")["key"]
        body = crime_agreement("Soak benchmark", providers, [RECIPIENT])
        agreement = _ok(client.post("/v1/agreements", json=body, headers=admin), "agreement")
        for key in keys.values():
            _ok(client.post(f"/v1/agreements/{agreement['id']}/sign",
                            json={"signatory": "Soak"}, headers=bearer(key)), "sign")  # fmt: skip
        loaded = client.post(
            f"/v1/geographies/{LAYER}",
            params={"code_field": "code", "name_field": "name"},
            json=demo_layer(),
            headers=admin,
        )
        _ok(loaded, "layer")
        wait_until(lambda: _ok(client.get(loaded.headers["location"], headers=admin), "status")
                   ["status"] == "active", 120, "the layer was not served")  # fmt: skip
    return [keys[p] for p in providers], keys[RECIPIENT]


def wait_until(condition: Callable[[], bool], seconds: float, message: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(message)


def push(gateway: str, key: str, body: bytes) -> tuple[int, dict[str, Any]]:
    with httpx.Client(base_url=gateway, timeout=MAX_SECONDS) as client:
        answer = client.post(
            "/v1/datasets/police-crime/records",
            content=body,
            headers={**bearer(key), "Content-Type": "text/csv"},
        )
    return answer.status_code, (answer.json() if answer.content else {})


class Readers:
    """``READERS`` threads alternating an aggregates query and a records page until stopped."""

    def __init__(self, gateway: str, key: str) -> None:
        self.gateway, self.key = gateway, key
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self, limit: int | None = None) -> None:
        issued = iter(range(limit)) if limit else None

        def worker(number: int) -> None:
            with httpx.Client(base_url=self.gateway, timeout=60, headers=bearer(self.key)) as c:
                turn = number
                while not self.stop.is_set():
                    if issued is not None and next(issued, None) is None:
                        return
                    path = AGGREGATES if turn % 2 else RECORDS
                    turn += 1
                    started = time.perf_counter()
                    status: int | str
                    try:
                        status = c.get(path).status_code
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    elapsed = time.perf_counter() - started
                    with self.lock:
                        if status == 200:
                            self.latencies.append(elapsed)
                        else:
                            self.errors[str(status)] = self.errors.get(str(status), 0) + 1

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(READERS)]
        for thread in threads:
            thread.start()
        self.threads = threads

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)

    def quantiles(self) -> tuple[float, float]:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan"), float("nan")
        return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


class PeakRss:
    """Samples each service process's resident set size twice a second."""

    def __init__(self, hub: Hub) -> None:
        self.processes = {
            name: psutil.Process(service.process.pid)
            for name, service in hub.services.items()
            if service.process is not None
        }
        self.peak = dict.fromkeys(self.processes, 0.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop.wait(0.5):
            for name, process in self.processes.items():
                try:
                    rss = process.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peak[name] = max(self.peak[name], rss)

    def close(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join(5)
        return self.peak


def batches_done(gateway: str, pushed: list[tuple[str, str]]) -> Callable[[], bool]:
    def done() -> bool:
        with httpx.Client(base_url=gateway, timeout=30) as client:
            for key, batch_id in pushed:
                batch = client.get(f"/v1/batches/{batch_id}", headers=bearer(key)).json()
                if batch.get("depersonalised") != batch.get("accepted"):
                    return False
        return True

    return done


def soak(label: str, databases: dict[str, str]) -> int:
    """One soak on the given databases; its figures are named ``soak_<label>_...``."""
    ports = {name: free_port() for name in DEFAULT_PORTS}
    extra = {
        "CSP_ADMIN_KEY": ADMIN_KEY,
        "CSP_GATEWAY_RATE_LIMIT": "100000000/second",
        "CSP_GATEWAY_LOG_LEVEL": "WARNING",
        "CSP_INGEST_LOG_LEVEL": "WARNING",
        "CSP_DEPERSONALISE_LOG_LEVEL": "WARNING",
        "CSP_AGREEMENTS_LOG_LEVEL": "WARNING",
    }
    hub = Hub(ports, databases, HubKeys.generate(), extra, sink=lambda _line: None)
    hub.start()
    try:
        gateway = hub.gateway_url
        provider_keys, reader_key = setup(gateway)
        print(f"soak on {label}: {PROVIDERS} providers x {ROWS:,} rows, {READERS} readers")

        idle = Readers(gateway, reader_key)
        idle.run(limit=IDLE_READS)
        for thread in idle.threads:
            thread.join(300)
        idle_p50, idle_p99 = idle.quantiles()

        started = time.perf_counter()
        status, solo = push(gateway, provider_keys[0], crimes_csv(0, ROWS, "solo"))
        solo_rate = solo.get("accepted", 0) / (time.perf_counter() - started)
        if status != 202:
            raise RuntimeError(f"the solo push answered {status}")
        pushed = [(provider_keys[0], solo["batch_id"])]

        bodies = [crimes_csv(i, ROWS, "soak") for i in range(PROVIDERS)]
        rss = PeakRss(hub)
        readers = Readers(gateway, reader_key)
        readers.run()
        started = time.perf_counter()
        with ThreadPoolExecutor(PROVIDERS) as pool:
            answers = list(pool.map(push, [gateway] * PROVIDERS, provider_keys, bodies))
        push_seconds = time.perf_counter() - started
        readers.join()
        accepted = sum(a.get("accepted", 0) for s, a in answers if s == 202)
        push_errors = sum(1 for s, _ in answers if s != 202)
        pushed += [(k, a["batch_id"]) for k, (s, a) in zip(provider_keys, answers, strict=True)
                   if s == 202]  # fmt: skip
        converge = wait_until(batches_done(gateway, pushed), MAX_SECONDS, "batches stuck")
        peak = rss.close()
        p50, p99 = readers.quantiles()
        read_errors = sum(readers.errors.values())
        print(
            f"pushes {accepted:,} rows in {push_seconds:.1f} s; {len(readers.latencies):,} reads "
            f"(errors {readers.errors or 0}); depersonalised {converge:.1f} s after the last "
            f"answer; idle reads p50 {idle_p50:.1f} ms p99 {idle_p99:.1f} ms",
            flush=True,
        )
        name = f"soak_{label}"
        record(
            f"{name}_rows_per_s",
            accepted / push_seconds,
            "rows/s",
            baseline=solo_rate,
            target=0.5,
            note="concurrent pushes vs one push of the same size alone",
        )
        record(f"{name}_read_p50_ms", p50, "ms", baseline=idle_p50, higher_is_better=False)
        record(f"{name}_read_p99_ms", p99, "ms", baseline=idle_p99, higher_is_better=False)
        record(f"{name}_errors", push_errors + read_errors, "requests", target=None,
               push_errors=push_errors, read_errors=readers.errors)  # fmt: skip
        record(f"{name}_depersonalised_after_s", converge, "s", target=None)
        for service, mb in sorted(peak.items()):
            record(f"{name}_peak_rss_{service}_mb", mb, "MiB", baseline=500.0,
                   higher_is_better=False, target=1.0)  # fmt: skip
        return push_errors + read_errors
    finally:
        hub.stop()


def main() -> int:
    folder = Path(tempfile.mkdtemp(prefix="csp-soak-"))
    errors = soak("sqlite", {name: f"sqlite:///{folder / name}.db" for name in DEFAULT_PORTS})
    names = {name: f"csp_bench_soak_{name}" for name in DEFAULT_PORTS}
    urls = {name: bench_database(True, database) for name, database in names.items()}
    if all(urls.values()):
        try:
            errors += soak("postgresql", {k: str(v) for k, v in urls.items()})
        finally:
            for database in names.values():
                bench_database(False, database)
    else:
        print("PostgreSQL does not answer: skipped the soak on it", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

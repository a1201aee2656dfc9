"""Faults survived by real processes: ingest and a fake depersonalise on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import REPO, using_postgres
from tests.ingest.conftest import token

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
PUSH = "/v1/datasets/police-crime/records"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


class Processes:
    def __init__(self, tmp: Path, database_url: str) -> None:
        self.tmp = tmp
        self.database_url = database_url
        self.ingest_port = free_port()
        self.receiver_port = free_port()
        self.log = tmp / "events.log"
        self.ingest: subprocess.Popen[bytes] | None = None
        self.receiver: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    def start_ingest(self) -> None:
        env = {
            **os.environ,
            "CSP_INGEST_PORT": str(self.ingest_port),
            "CSP_INGEST_DATABASE_URL": self.database_url,
            "CSP_INGEST_DEPERSONALISE_URL": f"http://127.0.0.1:{self.receiver_port}",
            "CSP_INGEST_PURGE_ENABLED": "false",
            "CSP_INGEST_RELAY_INTERVAL_SECONDS": "0.1",
            "CSP_INGEST_RELAY_BACKOFF_MAX_SECONDS": "0.5",
            "CSP_INGEST_RELAY_BATCH_EVENTS": "2000",
            "CSP_INGEST_LOG_LEVEL": "WARNING",
        }
        self.ingest = subprocess.Popen(
            [sys.executable, "-m", "services.ingest"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        wait_up(self.url + "/healthz", self.ingest)

    def start_receiver(self) -> None:
        self.receiver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.ingest.fake_depersonalise",
                str(self.receiver_port),
                str(self.log),
            ],
            cwd=REPO,
        )
        wait_up(f"http://127.0.0.1:{self.receiver_port}/docs", self.receiver)

    def stop(self, process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            process.wait(timeout=30)

    def events(self) -> list[str]:
        return self.log.read_text().split("\n")[:-1] if self.log.exists() else []


@pytest.fixture
def procs(tmp_path: Path, database_url: Any) -> Iterator[Processes]:
    running = Processes(tmp_path, database_url("ingest"))
    yield running
    running.stop(running.ingest)
    running.stop(running.receiver)


def crime_csv(count: int, prefix: str) -> bytes:
    lines = ["source_ref,occurred_at,category,easting,northing"]
    lines += [
        f"{prefix}{i},2024-{i % 12 + 1:02d}-05T10:00:00Z,Burglary,{380000 + i % 5000},398000"
        for i in range(count)
    ]
    return ("\n".join(lines) + "\n").encode()


def push_csv(url: str, body: bytes, key: str | None = None) -> httpx.Response:
    headers = {**token("gmp"), "Content-Type": "text/csv"}
    if key:
        headers["Idempotency-Key"] = key
    return httpx.post(url + PUSH, content=body, headers=headers, timeout=120)


def batch(url: str, batch_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/v1/batches/{batch_id}", headers=token("gmp")).json())


def test_depersonalise_down_during_100k_push_every_record_arrives_once(procs: Processes) -> None:
    procs.start_receiver()
    procs.start_ingest()
    procs.stop(procs.receiver)
    answers = [push_csv(procs.url, crime_csv(50_000, f"h{n}-")).json() for n in range(2)]
    assert [a["accepted"] for a in answers] == [50_000, 50_000]
    time.sleep(1.0)
    assert all(batch(procs.url, a["batch_id"])["delivered"] == 0 for a in answers)
    procs.start_receiver()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        states = [batch(procs.url, a["batch_id"]) for a in answers]
        if all(s["status"] == "delivered" for s in states):
            break
        time.sleep(0.5)
    assert [s["delivered"] for s in states] == [50_000, 50_000]
    assert [s["depersonalised"] for s in states] == [50_000, 50_000]
    events = procs.events()
    assert len(events) == 100_000 and len(set(events)) == 100_000


def writing_started(database_url: str) -> Callable[[], bool]:
    """Whether a batch transaction has begun writing (WAL growth; a PostgreSQL xid assigned)."""
    if not using_postgres():
        wal = Path(database_url.removeprefix("sqlite:///") + "-wal")
        before = wal.stat().st_size if wal.exists() else 0
        return lambda: wal.exists() and wal.stat().st_size > before + 8_000_000
    engine = create_engine(database_url)

    def started() -> bool:
        with engine.connect() as connection:
            writers = connection.execute(
                text(
                    "select count(*) from pg_stat_activity where datname = current_database() "
                    "and backend_xid is not null and pid <> pg_backend_pid()"
                )
            ).scalar_one()
        if writers:
            engine.dispose()
        return bool(writers)

    return started


def count(database_url: str, table: str) -> int:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        found = connection.execute(text(f"select count(*) from {table}")).scalar_one()
    engine.dispose()
    return int(found)


def test_sigkill_mid_batch_is_all_or_nothing_and_retry_completes(procs: Processes) -> None:
    procs.start_receiver()
    procs.start_ingest()
    body = crime_csv(400_000, "k")
    started = writing_started(procs.database_url)
    thread = threading.Thread(target=lambda: _swallow(push_csv, procs.url, body, "kill-me"))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not started():
        time.sleep(0.02)
    time.sleep(0.3)
    procs.stop(procs.ingest, signal.SIGKILL)
    thread.join()
    assert count(procs.database_url, "record") == 0
    assert count(procs.database_url, "batch") == 0
    procs.start_ingest()
    answers = [push_csv(procs.url, body, "kill-me") for _ in range(3)]
    assert all(a.status_code == 202 for a in answers)
    assert answers[0].json()["accepted"] == 400_000
    assert answers[1].json() == answers[0].json() == answers[2].json()
    assert count(procs.database_url, "record") == 400_000
    assert count(procs.database_url, "batch") == 1


def _swallow(function: Any, *args: Any) -> None:
    try:
        function(*args)
    except httpx.HTTPError:
        pass

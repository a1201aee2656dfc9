"""Writers on the embedded SQLite default queue instead of failing; readers never wait for them."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from shared.db import in_read_transaction, in_write_transaction, make_engine, write_transaction


def impatient_engine(path: Path) -> Engine:
    """An engine whose connections give up on the SQLite lock after 50 ms."""
    engine = make_engine(f"sqlite:///{path}")

    def short_wait(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA busy_timeout=50")

    event.listen(engine, "connect", short_wait)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS t (writer INTEGER, n INTEGER)"))
    return engine


def writers(engine: Engine, begin: Any, count: int = 4, hold: float = 0.3) -> list[BaseException]:
    failures: list[BaseException] = []

    def write(number: int) -> None:
        try:
            with begin(engine) as connection:
                connection.execute(text("SELECT count(*) FROM t")).scalar()
                connection.execute(text("INSERT INTO t VALUES (:w, 1)"), {"w": number})
                time.sleep(hold)  # a long batch
                connection.execute(text("INSERT INTO t VALUES (:w, 2)"), {"w": number})
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return failures


@pytest.mark.slow
def test_sqlite_writers_queue_and_all_commit(tmp_path: Path) -> None:
    engine = impatient_engine(tmp_path / "queued.db")
    started = time.monotonic()
    assert writers(engine, write_transaction) == []
    assert time.monotonic() - started >= 4 * 0.3  # one after another
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 8
    engine.dispose()


def test_without_the_queue_the_same_writers_are_refused(tmp_path: Path) -> None:
    # The control: what the queue prevents (plain transactions on the same impatient engine).
    engine = impatient_engine(tmp_path / "plain.db")
    failures = writers(engine, lambda e: e.begin())
    assert failures and all(isinstance(f, OperationalError) for f in failures)
    engine.dispose()


def test_readers_do_not_wait_for_a_long_write(tmp_path: Path) -> None:
    engine = impatient_engine(tmp_path / "read.db")
    holding, released = threading.Event(), threading.Event()

    def long_write() -> None:
        with write_transaction(engine) as connection:
            connection.execute(text("INSERT INTO t VALUES (0, 0)"))
            holding.set()
            released.wait(10)

    thread = threading.Thread(target=long_write)
    thread.start()
    assert holding.wait(5)
    # The read is answered while the write still holds its transaction open (it is only released
    # after the read): an order, not a time.
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 0
    released.set()
    thread.join(5)
    engine.dispose()


def test_a_failed_write_rolls_back_and_frees_the_queue(tmp_path: Path) -> None:
    engine = impatient_engine(tmp_path / "rollback.db")
    with pytest.raises(RuntimeError), write_transaction(engine) as connection:
        connection.execute(text("INSERT INTO t VALUES (9, 9)"))
        raise RuntimeError("boom")
    with write_transaction(engine) as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 0
    engine.dispose()


def test_a_background_job_commits_all_its_work_or_none_of_it(tmp_path: Path) -> None:
    engine = impatient_engine(tmp_path / "job.db")

    def add(connection: Any, writer: int, n: int = 1) -> int:
        connection.execute(text("INSERT INTO t VALUES (:w, :n)"), {"w": writer, "n": n})
        return writer

    def add_then_fail(connection: Any) -> None:
        add(connection, 2)
        raise RuntimeError("boom")

    def count(connection: Any) -> int:
        return int(connection.execute(text("SELECT count(*) FROM t")).scalar_one())

    assert in_write_transaction(engine, add, 1, n=5) == 1
    with pytest.raises(RuntimeError):
        in_write_transaction(engine, add_then_fail)
    assert in_read_transaction(engine, count) == 1
    engine.dispose()

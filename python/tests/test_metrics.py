"""Pool.metrics_text() read by the Prometheus text-format parser after a
known workload, and the on_event callback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.metrics_core import Metric

import dialpool
from conftest import refused_port, replace_port, wait_until, with_options

HISTOGRAMS = [
    "db_client_connection_create_time_seconds",
    "db_client_connection_wait_time_seconds",
    "db_client_connection_use_time_seconds",
    "db_client_operation_duration_seconds",
    "dialpool_dial_duration_seconds",
    "dialpool_login_duration_seconds",
    "dialpool_query_cancel_duration_seconds",
]
GAUGES = [
    "db_client_connection_count",
    "db_client_connection_idle_max",
    "db_client_connection_idle_min",
    "db_client_connection_max",
    "db_client_connection_pending_requests",
    "dialpool_connection_connecting",
    "dialpool_connection_max_idle_time_seconds",
]
# The parser names a counter family without its _total suffix.
COUNTERS = [
    "db_client_connection_timeouts",
    "dialpool_acquire_cancelled",
    "dialpool_connection_connects",
    "dialpool_connection_leaks",
    "dialpool_connection_connect_failures",
    "dialpool_connection_closed",
]


def families(text: str) -> Dict[str, Metric]:
    out: Dict[str, Metric] = {}
    for f in text_string_to_metric_families(text):
        assert f.name not in out, f"family {f.name} twice"
        out[f.name] = f
    return out


# Labels every series of a family has; the others tell series apart.
COMMON = {"db_client_connection_pool_name", "db_system_name", "le"}


def value(fam: Metric, sample: str, **labels: str) -> Optional[float]:
    """The value of the one sample named `sample` whose distinguishing
    labels are exactly `labels` (so a histogram's success series is not
    confused with its error series); None when there is none."""
    found = [
        s.value
        for s in fam.samples
        if s.name == sample and {k: v for k, v in s.labels.items() if k not in COMMON} == labels
    ]
    assert len(found) <= 1, (sample, labels, found)
    return found[0] if found else None


def test_metrics_text_after_a_known_workload(pg_url: str) -> None:
    n = 5
    url = with_options(pg_url, max_open=1, acquire_timeout="200ms", pool_name="py-metrics")
    with dialpool.Pool(url) as pool:
        for i in range(n):
            assert pool.query("SELECT %s::int", (i,)) == [(i,)]
        with pool.acquire():
            with pytest.raises(dialpool.AcquireTimeout):
                pool.query("SELECT 1")
        with pytest.raises(dialpool.QueryTimeout):
            pool.query("SELECT pg_sleep(5)", timeout=0.3)
        text = pool.metrics_text()

    fams = families(text)
    for name in HISTOGRAMS:
        assert fams[name].type == "histogram", name
    for name in GAUGES:
        assert fams[name].type == "gauge", name
    for name in COUNTERS:
        assert fams[name].type == "counter", name
    for f in fams.values():
        assert f.documentation, f"{f.name} has no HELP"
        for s in f.samples:
            assert s.labels["db_client_connection_pool_name"] == "py-metrics", s

    count = fams["db_client_connection_count"]
    assert value(count, "db_client_connection_count", db_client_connection_state="used") == 0
    assert value(count, "db_client_connection_count", db_client_connection_state="idle") in (0, 1)
    assert value(fams["db_client_connection_max"], "db_client_connection_max") == 1
    assert value(fams["db_client_connection_idle_max"], "db_client_connection_idle_max") == 1
    assert value(fams["db_client_connection_idle_min"], "db_client_connection_idle_min") == 0
    assert value(fams["db_client_connection_pending_requests"], "db_client_connection_pending_requests") == 0
    assert value(fams["db_client_connection_timeouts"], "db_client_connection_timeouts_total") == 1
    assert value(fams["dialpool_connection_connects"], "dialpool_connection_connects_total") >= 1

    # Every acquire that got a connection: n statements, the held one, the slow one.
    wait = fams["db_client_connection_wait_time_seconds"]
    assert value(wait, "db_client_connection_wait_time_seconds_count") == n + 2
    use = fams["db_client_connection_use_time_seconds"]
    assert value(use, "db_client_connection_use_time_seconds_count") == n + 2
    # The held connection was held while the other acquire waited 200 ms.
    assert value(use, "db_client_connection_use_time_seconds_sum") >= 0.15

    ops = fams["db_client_operation_duration_seconds"]
    assert {s.labels["db_system_name"] for s in ops.samples} == {"postgresql"}
    assert value(ops, "db_client_operation_duration_seconds_count") == n
    assert value(ops, "db_client_operation_duration_seconds_count", error_type="DP_QUERY_TIMEOUT") == 1
    assert value(ops, "db_client_operation_duration_seconds_sum", error_type="DP_QUERY_TIMEOUT") >= 0.25
    # The acquire timeout never reached a statement.
    assert not [s for s in ops.samples if s.labels.get("error_type") == "DP_ACQUIRE_TIMEOUT"]

    cancel = fams["dialpool_query_cancel_duration_seconds"]
    assert value(cancel, "dialpool_query_cancel_duration_seconds_count") == 1
    create = fams["db_client_connection_create_time_seconds"]
    assert value(create, "db_client_connection_create_time_seconds_count") >= 1
    dial = fams["dialpool_dial_duration_seconds"]
    assert value(dial, "dialpool_dial_duration_seconds_count", dialpool_dial_phase="tcp") >= 1
    login = fams["dialpool_login_duration_seconds"]
    assert value(login, "dialpool_login_duration_seconds_count") >= 1

    # Buckets are cumulative and end at +Inf with the count.
    for name in HISTOGRAMS:
        series: Dict[tuple, List[float]] = {}
        counts: Dict[tuple, float] = {}
        for s in fams[name].samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                series.setdefault(key, []).append(s.value)
                if s.labels["le"] == "+Inf":
                    counts.setdefault(key, s.value)
            elif s.name.endswith("_count"):
                assert counts.get(key) == s.value, (name, key)
        for key, buckets in series.items():
            assert buckets == sorted(buckets), (name, key)


def test_the_default_pool_name_is_host_port_database(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    with dialpool.Pool(pg_url) as pool:
        fams = families(pool.metrics_text())
    (sample,) = fams["db_client_connection_max"].samples
    assert sample.labels["db_client_connection_pool_name"] == f"{parts.hostname}:{parts.port}{parts.path}"


class Recorder:
    def __init__(self) -> None:
        self.events: List[dialpool.PoolEvent] = []
        self.threads = set()
        self.lock = threading.Lock()

    def __call__(self, ev: dialpool.PoolEvent) -> None:
        with self.lock:
            self.events.append(ev)
            self.threads.add(threading.get_ident())

    def kinds(self) -> List[str]:
        with self.lock:
            return [e.kind for e in self.events]


def test_on_event_receives_the_pool_events_in_order(pg_url: str) -> None:
    rec = Recorder()
    url = with_options(pg_url, max_open=1, acquire_timeout="200ms")
    pool = dialpool.Pool(url, on_event=rec)
    pool.query("SELECT 1")
    with pool.acquire(label="held"):
        with pytest.raises(dialpool.AcquireTimeout):
            pool.query("SELECT 1")
    pool.close()
    kinds = rec.kinds()
    assert kinds[:2] == ["connect_start", "connect"], kinds
    assert kinds.count("acquire") == 2 and kinds.count("release") == 2, kinds
    assert kinds.count("acquire_timeout") == 1, kinds
    assert kinds[-1] == "close", kinds

    by_kind = {e.kind: e for e in rec.events}
    connect = by_kind["connect"]
    assert connect.error is None and connect.elapsed > 0 and connect.tcp is not None
    assert connect.tcp <= connect.elapsed
    held = [e for e in rec.events if e.kind == "acquire" and e.label == "held"]
    assert len(held) == 1
    timeout = by_kind["acquire_timeout"]
    assert isinstance(timeout.error, dialpool.AcquireTimeout) and timeout.error.limit == "acquire_timeout"
    assert 0.15 <= timeout.elapsed < 5
    close = by_kind["close"]
    assert close.reason == "pool_closed" and close.elapsed > 0
    assert "pool_closed" in repr(close)
    # One thread of the pool's own, never the caller's.
    assert len(rec.threads) == 1 and threading.get_ident() not in rec.threads
    # Nothing after close() has returned.
    n = len(rec.events)
    time.sleep(0.1)
    assert len(rec.events) == n


def test_a_failed_connect_event_carries_its_error(pg_url: str) -> None:
    rec = Recorder()
    url = with_options(replace_port(pg_url, refused_port()), acquire_timeout="300ms")
    with dialpool.Pool(url, on_event=rec) as pool:
        with pytest.raises(dialpool.AcquireTimeout):
            pool.query("SELECT 1")
    failed = [e for e in rec.events if e.kind == "connect"]
    assert failed and all(isinstance(e.error, dialpool.ConnectionRefused) for e in failed)
    assert failed[0].error.layer == "dial"


def test_on_event_exceptions_are_logged_never_raised(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def boom(ev: dialpool.PoolEvent) -> None:
        calls.append(ev.kind)
        raise RuntimeError("boom from the callback")

    with caplog.at_level(logging.ERROR, logger="dialpool"):
        with dialpool.Pool(pg_url, on_event=boom) as pool:
            assert pool.query("SELECT 1") == [(1,)]
            assert pool.query("SELECT 2") == [(2,)]
    assert "release" in calls
    errors = [r for r in caplog.records if r.name == "dialpool" and r.exc_info]
    assert errors and isinstance(errors[0].exc_info[1], RuntimeError)
    assert "on_event" in errors[0].getMessage()


def test_on_event_must_be_callable(pg_url: str) -> None:
    with pytest.raises(dialpool.InvalidArgument, match="on_event"):
        dialpool.Pool(pg_url, on_event=42)  # type: ignore[arg-type]


def test_closing_from_inside_the_callback_does_not_hang(pg_url: str) -> None:
    holder: Dict[str, dialpool.Pool] = {}
    closed = threading.Event()

    def close_on_release(ev: dialpool.PoolEvent) -> None:
        if ev.kind == "release" and not closed.is_set():
            holder["pool"].close()
            closed.set()

    pool = dialpool.Pool(pg_url, on_event=close_on_release)
    holder["pool"] = pool
    pool.query("SELECT 1")
    assert wait_until(closed.is_set, timeout=5)
    pool.close()
    assert pool.closed


def test_the_logging_example_runs(pg_url: str) -> None:
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "log_events.py")
    out = subprocess.run(
        [sys.executable, example, pg_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "INFO app.db: connected in" in out.stderr, out.stderr
    assert "INFO app.db: connection closed (pool_closed)" in out.stderr, out.stderr
    fams = families(out.stdout)
    ops = fams["db_client_operation_duration_seconds"]
    assert value(ops, "db_client_operation_duration_seconds_count") == 3

"""Logs a dialpool pool's events with the standard ``logging`` module, then
prints the pool's metrics in the Prometheus text format.

    python python/examples/log_events.py 'postgres://user:pw@host/db?acquire_timeout=1s'

``on_event`` is called on one thread of the pool's own, in order, so a
handler that only formats and logs is all it takes; slow work (network
calls) belongs on a queue of your own. Exceptions it raises are logged by
dialpool (logger ``"dialpool"``) and never reach the pool.
"""

from __future__ import annotations

import logging
import sys

import dialpool

log = logging.getLogger("app.db")


def log_event(ev: dialpool.PoolEvent) -> None:
    """One log line per event: failures as warnings, the chatty per-query
    acquire/release pairs at DEBUG."""
    if ev.kind == "connect" and ev.error is not None:
        log.warning("connect failed after %.3fs: %s", ev.elapsed, ev.error)
    elif ev.kind == "connect":
        log.info(
            "connected in %.3fs (tcp %.3fs, tls %s)",
            ev.elapsed,
            ev.tcp or 0.0,
            "%.3fs" % ev.tls if ev.tls is not None else "off",
        )
    elif ev.kind == "acquire_timeout":
        log.warning("no connection after %.3fs: %s", ev.elapsed, ev.error)
    elif ev.kind == "leak":
        log.warning("connection %r held for %.1fs", ev.label, ev.elapsed)
    elif ev.kind == "close":
        log.info("connection closed (%s) after %.1fs", ev.reason, ev.elapsed)
    elif ev.kind == "adjusted":
        log.warning("%s lowered to %.1fs: %s", ev.option, ev.value, ev.why)
    elif ev.kind in ("acquire", "release"):
        log.debug("%s after %.6fs", ev.kind, ev.elapsed)


def main(url: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with dialpool.Pool(url, on_event=log_event, max_open=2) as pool:
        for i in range(3):
            pool.query("SELECT %s", (i,))
        print(pool.metrics_text(), end="")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python log_events.py URL")
    main(sys.argv[1])

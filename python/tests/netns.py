"""Network namespaces for the faults that need a network of their own: a DNS
resolver that never answers or answers NXDOMAIN, a loopback that is down.

The Python counterpart of `tests/testkit/src/netns.rs` (see tests/README.md),
with the same conventions, so one cleanup serves both:

    def test_something(request):
        if not netns.enter(request, resolver="silent"):
            return  # outside: the body already ran inside (or was skipped)
        # inside: own loopback, resolv.conf pointing at 127.0.0.1:53, root

Outside, `enter` (root and `ip` needed) creates a namespace `dptest-<pid>-py<n>`
(testkit's prefix: its `cleanup_stale()` removes one left by a killed run,
and so does ours), brings `lo` up unless told not to, writes
`/etc/netns/NAME/resolv.conf` (which `ip netns exec` mounts over
/etc/resolv.conf) when a fake resolver is wanted, and re-runs this one test
with `ip netns exec NAME python -m pytest <node id>` and
DIALPOOL_NETNS_INNER=<node id>. The namespace and its /etc/netns dir are
deleted afterwards, also on failure. Inside, `enter` starts the resolver
(it lives until the inner process exits) and returns True.

Inside a namespace the runner's servers are unreachable: 127.0.0.1 there is
another loopback. Nothing is ever sent outside the namespace.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import threading
from typing import List, Optional, Set

import pytest

from conftest import require_faults

ENV_INNER = "DIALPOOL_NETNS_INNER"
NAME_PREFIX = "dptest-"
#: The whole inner run (interpreter start, pytest, the test) is bounded.
INNER_TIMEOUT = 120.0
RESOLV_CONF = "# dialpool tests: fake resolver inside the namespace\nnameserver 127.0.0.1\noptions timeout:2 attempts:1\n"

_counter = itertools.count()
# The inner process's resolver: kept referenced so its sockets stay open.
_resolver: List[object] = []


def _node_id(request: pytest.FixtureRequest) -> str:
    return f"{request.node.path}::{request.node.name}"


def _ip(ip: str, *args: str) -> None:
    out = subprocess.run([ip, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {out.stdout.strip()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(ip: str) -> None:
    """Deletes `dptest-*` namespaces (and /etc/netns dirs) whose owner
    process is gone: left behind when a test run was killed."""
    names: Set[str] = set()
    for d in ("/run/netns", "/etc/netns"):
        try:
            names.update(n for n in os.listdir(d) if n.startswith(NAME_PREFIX))
        except OSError:
            pass
    for name in names:
        owner = name[len(NAME_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and _pid_alive(int(owner)):
            continue
        if os.path.exists(os.path.join("/run/netns", name)):
            try:
                _ip(ip, "netns", "del", name)
            except RuntimeError:
                pass
        shutil.rmtree(os.path.join("/etc/netns", name), ignore_errors=True)


def enter(request: pytest.FixtureRequest, *, resolver: Optional[str] = None, loopback_up: bool = True) -> bool:
    """See the module comment. `resolver`: None (the system's, i.e. none
    reachable), "silent" or "nxdomain"."""
    node = _node_id(request)
    inner = os.environ.get(ENV_INNER)
    if inner is not None:
        if inner != node:
            pytest.fail(f"netns.enter in {node} inside the namespace of {inner}: nesting is not supported")
        if resolver is not None and not _resolver:
            _resolver.append(start_resolver(resolver))
        return True

    if os.geteuid() != 0:
        require_faults("needs root to create a network namespace")
    ip = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.path.exists(p)), None)
    if ip is None:
        require_faults("the `ip` command (iproute2) is not installed")
        return False  # not reached: require_faults raises
    cleanup_stale(ip)
    name = f"{NAME_PREFIX}{os.getpid()}-py{next(_counter)}"
    try:
        _ip(ip, "netns", "add", name)
    except RuntimeError as e:
        require_faults(f"cannot create a network namespace: {e}")
    etc = os.path.join("/etc/netns", name)
    try:
        if loopback_up or resolver is not None:
            _ip(ip, "-n", name, "link", "set", "lo", "up")
        if resolver is not None:
            os.makedirs(etc, exist_ok=True)
            with open(os.path.join(etc, "resolv.conf"), "w") as f:
                f.write(RESOLV_CONF)
        cmd = [ip, "netns", "exec", name, sys.executable, "-m", "pytest", node, "-q", "-p", "no:cacheprovider"]
        try:
            out = subprocess.run(
                cmd,
                env=dict(os.environ, **{ENV_INNER: node}),
                cwd=str(request.config.invocation_params.dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=INNER_TIMEOUT,
            )
        except subprocess.TimeoutExpired as e:
            partial = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
            pytest.fail(f"the inner run in namespace {name} took over {INNER_TIMEOUT:.0f} s:\n{partial}")
    finally:
        try:
            _ip(ip, "netns", "del", name)
        except RuntimeError as e:
            print(f"netns: {e}", file=sys.stderr)
        shutil.rmtree(etc, ignore_errors=True)
    tail = "\n".join(out.stdout.splitlines()[-60:])
    if out.returncode != 0:
        pytest.fail(f"{node} failed inside network namespace {name}:\n{tail}")
    if "1 passed" not in out.stdout:
        pytest.fail(f"the inner run in namespace {name} did not pass exactly one test:\n{tail}")
    return False


# -- fake resolvers (inside the namespace only: they bind 127.0.0.1:53) --------


class FakeResolver:
    """UDP and TCP sockets on 127.0.0.1:53. Silent: bound and never read,
    so a lookup waits for the resolver's own timeout (the sockets must exist:
    without them the kernel answers ICMP port unreachable and the lookup
    fails at once). NXDOMAIN: every query answered with rcode 3."""

    def __init__(self, answer: bool) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 53))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 53))
        self.tcp.listen(16)
        if answer:
            # Daemon threads: they end with the inner process.
            threading.Thread(target=self._serve_udp, daemon=True).start()
            threading.Thread(target=self._serve_tcp, daemon=True).start()

    def _serve_udp(self) -> None:
        while True:
            try:
                query, peer = self.udp.recvfrom(1500)
            except OSError:
                return
            reply = nxdomain_reply(query)
            if reply is not None:
                self.udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        # glibc retries over TCP after a truncated answer: serve it too.
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    for _ in range(64):
                        head = conn.recv(2, socket.MSG_WAITALL)
                        if len(head) < 2:
                            break
                        query = conn.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)
                        reply = nxdomain_reply(query)
                        if reply is None:
                            break
                        conn.sendall(len(reply).to_bytes(2, "big") + reply)
                except OSError:
                    pass


def start_resolver(kind: str) -> FakeResolver:
    if kind not in ("silent", "nxdomain"):
        raise ValueError(f"unknown resolver {kind!r}; valid: silent, nxdomain")
    return FakeResolver(answer=kind == "nxdomain")


def nxdomain_reply(query: bytes) -> Optional[bytes]:
    """The NXDOMAIN answer to `query`: its id and opcode, QR+RD+RA, rcode 3,
    the first question echoed; None when the query is malformed."""
    if len(query) < 12:
        return None
    qdcount = int.from_bytes(query[4:6], "big")
    end = 12
    if qdcount > 0:
        for _ in range(128):  # at most 127 labels in a name
            if end >= len(query):
                return None
            n = query[end]
            end += 1
            if n == 0:
                break
            if n & 0xC0:
                return None
            end += n
        else:
            return None
        end += 4  # QTYPE, QCLASS
        if end > len(query):
            return None
    header = query[0:2] + bytes([0x80 | (query[2] & 0x78) | 0x01, 0x80 | 0x03])
    header += bytes([0, 1 if qdcount > 0 else 0, 0, 0, 0, 0, 0, 0])
    return header + query[12:end]

"""Helpers for tests that start real servers (dagster dev, PostgreSQL) on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 1.0, log: Path | None = None):
    """Polls `predicate` until it returns something truthy; fails naming `what` (and the log's tail)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tail}")


def start_group(command: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """Starts `command` in its own process group, so that stop_group reaches every child it spawns."""
    out = open(log, "wb")
    return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, **kwargs)


def stop_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGINT (dagster dev shuts down its daemon and webserver on it), then SIGKILL whatever is left."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # run workers and code servers that outlived the leader
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)

"""Temporary folders next to their final name, and the removal of those whose writer died.

A folder is written as `.tmp-<name>-<host id>-<pid>-<random>` and renamed into
place when complete. The name says who is writing it, so a later writer on the
same machine can remove the ones whose process is gone, and leaves alone those
of live processes or of other machines sharing the storage.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import uuid
from pathlib import Path

TMP_PATTERN = re.compile(r"^\.tmp-(?P<key>.+)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}$")


def temp_sibling(final: Path) -> Path:
    """The temporary name to build `final` under (not created)."""
    return final.parent / f".tmp-{final.name}-{host_id()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def host_id() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:  # a killed process not yet reaped by its parent is a zombie: gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def remove_stale_tmp(folder: Path) -> list[Path]:
    """Remove temporary artifact folders in `folder` left by dead processes of this machine."""
    removed = []
    if not folder.is_dir():
        return removed
    me = host_id()
    for p in folder.iterdir():
        m = TMP_PATTERN.match(p.name)
        if m and m["host"] == me and int(m["pid"]) != os.getpid() and _process_gone(int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed

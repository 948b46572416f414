"""Which files Python opens, through an audit hook (PEP 578): a test can show a file was never read.

Every `open()`, `io.open()` and `Path.read_*` raises the "open" audit event, so
no read path can bypass it. Hooks cannot be removed, so one is installed once
and records only inside `with OpenedFiles() as opened:`.
"""

from __future__ import annotations

import os
import sys


class OpenedFiles:
    paths: list[str] | None = None
    installed = False

    def __enter__(self) -> list[str]:
        if not OpenedFiles.installed:
            sys.addaudithook(_record_open)
            OpenedFiles.installed = True
        OpenedFiles.paths = []
        return OpenedFiles.paths

    def __exit__(self, *exc) -> None:
        OpenedFiles.paths = None


def _record_open(event: str, args: tuple) -> None:
    if event == "open" and OpenedFiles.paths is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        OpenedFiles.paths.append(os.path.realpath(os.fsdecode(args[0])))

"""Small mutable files under the artifacts root: version manifests, the champion and its log, the OpenAI ledger.

Unlike artifacts they change in place. A local write is atomic (a temporary
file renamed over the old one). With artifacts on object storage the bucket's
copy is the record that every machine reads, and the mirror keeps a copy too.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.object_store import RemoteArtifacts


class StateFiles:
    def __init__(self, root: Path, remote: "RemoteArtifacts | None" = None):
        self.root, self.remote = Path(root), remote

    def read(self, rel: str) -> str | None:
        if self.remote is not None:
            data = self.remote.read_state(rel)
            return data.decode() if data is not None else None
        path = self.root / rel
        return path.read_text() if path.is_file() else None

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"  # two writers at once
        tmp.write_text(text)
        tmp.replace(path)  # atomic on POSIX: readers see the old or the new file
        if self.remote is not None:
            self.remote.write_state(rel, text.encode())  # one PUT: atomic as well

    def append(self, rel: str, line: str) -> None:
        if self.remote is None:
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(line)
            return
        # Objects cannot be appended to: rewritten whole (of two appends at the same moment, the later wins).
        self.write(rel, (self.read(rel) or "") + line)

    def names(self, rel_dir: str, suffix: str) -> list[str]:
        """The files directly in `rel_dir` whose names end with `suffix` (temporary files excluded)."""
        if self.remote is not None:
            names = self.remote.list_state(rel_dir)
        else:
            folder = self.root / rel_dir
            names = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        return sorted(n for n in names if n.endswith(suffix) and not n.startswith("."))

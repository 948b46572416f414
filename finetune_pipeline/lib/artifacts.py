"""Content-addressed, atomically written artifact folders with lineage.

Each artifact lives in `<root>/<asset>/<key>/`. The key is a hash of everything
that made the artifact (input hashes, config, code version): that is known
*before* the expensive work, so an unchanged recipe is a cache hit instead of a
retrain, and it is stable across machines even where training is not bitwise
reproducible. The payload's own file hashes are recorded in `lineage.json`.

A folder is written under a temporary sibling name and renamed when complete;
`lineage.json` is the last file written, so a folder without it never
exists under a final name and a killed run leaves nothing that looks finished.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from finetune_pipeline.lib.config import PROJECT_ROOT, stable_json

LINEAGE_FILE = "lineage.json"
KEY_LENGTH = 16  # hex characters: 64 bits, plenty for one project's artifacts


def hash_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_files(paths: list[Path], base: Path) -> str:
    """One hash over several files, covering their relative names too."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(base)).encode() + b"\0" + hash_file(p).encode() + b"\0")
    return h.hexdigest()


def recipe_key(recipe: dict[str, Any]) -> str:
    return hash_text(stable_json(recipe))[:KEY_LENGTH]


def git_commit() -> str | None:
    """The code's git commit, recorded for information (never part of a key)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class ArtifactRef:
    """What assets pass to each other: a path and hashes, never tensors."""

    asset: str
    key: str
    path: str
    cache_hit: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return Path(self.path)

    def lineage(self) -> dict[str, Any]:
        return read_lineage(self.dir)

    def as_input(self) -> dict[str, str]:
        return {"asset": self.asset, "key": self.key, "path": self.path}


def read_lineage(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / LINEAGE_FILE).read_text())


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def dir(self, asset: str, key: str) -> Path:
        d = (self.root / asset / key).resolve()
        # Keys are hashes or validated version keys; refuse anything that escapes.
        if self.root not in d.parents:
            raise ValueError(f"artifact path {d} escapes the artifacts root {self.root}")
        return d

    def find(self, asset: str, key: str) -> ArtifactRef | None:
        """The finished artifact for this recipe key, or None."""
        d = self.dir(asset, key)
        if (d / LINEAGE_FILE).is_file():
            return ArtifactRef(asset, key, str(d), cache_hit=True, info=read_lineage(d).get("info", {}))
        return None

    @contextmanager
    def write(
        self,
        asset: str,
        key: str,
        *,
        inputs: list[dict[str, str]],
        config: dict[str, Any],
        code_version: str,
        run_id: str | None = None,
    ) -> Iterator["PendingArtifact"]:
        """Yield a temporary folder; on success add lineage.json and rename it into place."""
        final = self.dir(asset, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        pending = PendingArtifact(Path(tmp))
        try:
            yield pending
            outputs = {
                str(p.relative_to(tmp)): hash_file(p)
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            }
            lineage = {
                "asset": asset,
                "key": key,
                "inputs": inputs,
                "config": config,
                "code_version": code_version,
                "git_commit": git_commit(),
                "dagster_run_id": run_id,
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "outputs": outputs,
                "info": pending.info,
            }
            _write_json(tmp / LINEAGE_FILE, lineage)
            try:
                os.rename(tmp, final)
            except OSError:
                # Another run finished the same recipe first: same key, same
                # inputs, so its artifact is as good as ours. Keep theirs.
                if not (final / LINEAGE_FILE).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        pending.ref = ArtifactRef(asset, key, str(final), cache_hit=False, info=pending.info)


@dataclass
class PendingArtifact:
    """A folder being written; `info` lands in lineage.json (counts, metrics)."""

    dir: Path
    info: dict[str, Any] = field(default_factory=dict)
    ref: ArtifactRef | None = None


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


write_json = _write_json

"""Content-addressed, atomically written artifact folders with lineage.

Each artifact lives in `<root>/<asset>/<key>/`. The key is a hash of everything
that made the artifact (input hashes, config, code version): that is known
*before* the expensive work, so an unchanged recipe is a cache hit instead of a
retrain, and it is stable across machines even where training is not bitwise
reproducible. The payload's own file hashes are recorded in `lineage.json`.

A folder is written under a temporary sibling name and renamed when complete;
`lineage.json` is the last file written, so a folder without it never
exists under a final name and a killed run leaves nothing that looks finished.
Files are fsynced before the rename, so a power cut cannot leave a final
folder with empty files either.

Stale temporary folders (a run killed mid-write) are never read: `find` only
looks at final names. They are removed by the next write into the same asset
folder when their name says they belong to this machine and their process is
gone; a temporary folder of a live process, or of another machine sharing the
storage, is left alone. Two runs writing the same key both finish: the first
rename wins, the second sees a finished artifact and drops its own copy (same
recipe, so the same content up to non-determinism).

With artifacts on object storage (`remote`), the root is this machine's mirror
of a bucket: a finished folder is uploaded before its local rename, and one the
mirror lacks is pulled from the bucket (see object_store.py).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.storage.hashing import hash_file
from finetune_pipeline.lib.storage.layout import LINEAGE_FILE, artifact_dir
from finetune_pipeline.lib.storage.secrets import refuse_secrets
from finetune_pipeline.lib.storage.temp_folders import remove_stale_tmp, temp_sibling

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.object_store import RemoteArtifacts



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
    """What assets pass to each other: an artifact's address (asset, key) and its info, never tensors.

    `path` is where the artifact is (or will be pulled to) on this machine; `remote` describes the
    bucket when artifacts are on object storage. Together they rebuild the store, so a ref carried
    to another process (Dagster's IO manager) or another machine can read and pull its artifact.
    """

    asset: str
    key: str
    path: str
    cache_hit: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    remote: dict[str, Any] | None = None  # RemoteArtifacts.describe(); None for a local folder

    def store(self) -> "ArtifactStore":
        root = Path(self.path).parent.parent
        if self.remote is None:
            return ArtifactStore(root)
        from finetune_pipeline.lib.storage.object_store import RemoteArtifacts

        return ArtifactStore(root, RemoteArtifacts(self.remote["url"], root, self.remote.get("options")))

    @property
    def dir(self) -> Path:
        """The artifact's local folder; with artifacts on object storage it is pulled on first use."""
        self.ensure_local()
        return Path(self.path)

    def ensure_local(self) -> "ArtifactRef":
        """Pull the artifact into the local mirror if it is not there (a fresh pod); returns self."""
        if self.remote and not (Path(self.path) / LINEAGE_FILE).is_file():
            self.store().ensure_local(self.asset, self.key)
        return self

    def lineage(self) -> dict[str, Any]:
        """Read without pulling the payload."""
        lineage = self.store().lineage(self.asset, self.key)
        if lineage is None:
            raise FileNotFoundError(f"artifact {self.asset}/{self.key} has no lineage.json in {self.path}"
                                    + (f" nor in {self.remote['url']}" if self.remote else ""))
        return lineage

    def as_input(self) -> dict[str, str]:
        """How lineage names this artifact as an input: its address, and its folder for whoever reads it."""
        return {"asset": self.asset, "key": self.key, "path": self.path}


def read_lineage(folder: Path) -> dict[str, Any]:
    """The lineage.json of a local artifact folder."""
    return json.loads((Path(folder) / LINEAGE_FILE).read_text())


class ArtifactStore:
    """Artifact folders under `root`; with `remote`, root is a mirror of a bucket that holds the record."""

    def __init__(self, root: Path, remote: "RemoteArtifacts | None" = None):
        self.root = Path(root).resolve()
        self.remote = remote
        if remote is not None and remote.mirror != self.root:
            raise ValueError(f"the mirror of {remote.url} is {remote.mirror}, not {self.root}")

    def _ref(self, asset: str, key: str, cache_hit: bool, info: dict[str, Any]) -> ArtifactRef:
        return ArtifactRef(asset, key, str(self.dir(asset, key)), cache_hit=cache_hit, info=info,
                           remote=self.remote.describe() if self.remote else None)

    def dir(self, asset: str, key: str) -> Path:
        """The artifact's folder on this machine (in the mirror, with artifacts on object storage)."""
        return artifact_dir(self.root, asset, key)

    def lineage(self, asset: str, key: str) -> dict[str, Any] | None:
        """The artifact's lineage, from this machine or the bucket, without pulling its files; None if absent."""
        local = self.dir(asset, key) / LINEAGE_FILE
        if local.is_file():
            return json.loads(local.read_text())
        if self.remote is not None and (data := self.remote.lineage_bytes(asset, key)) is not None:
            return json.loads(data)
        return None

    def find(self, asset: str, key: str) -> ArtifactRef | None:
        """The finished artifact for this recipe key, or None.

        From a bucket, only lineage.json is read here; the files are pulled when the ref's `dir` is
        first used, so a run whose steps are all cache hits downloads no weights.
        """
        lineage = self.lineage(asset, key)
        return None if lineage is None else self._ref(asset, key, True, lineage.get("info", {}))

    def ensure_local(self, asset: str, key: str) -> Path:
        """The artifact's local folder, pulled from the bucket first if this machine lacks it."""
        d = self.dir(asset, key)
        if not (d / LINEAGE_FILE).is_file() and (self.remote is None or self.remote.pull(asset, key) is None):
            raise FileNotFoundError(f"artifact {asset}/{key} is neither in {d}"
                                    + (f" nor in {self.remote.url}" if self.remote else ""))
        return d

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
        remove_stale_tmp(final.parent)
        tmp = temp_sibling(final)
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
            # lineage.json and its `info` (the asset's Dagster metadata) are read by everyone.
            refuse_secrets(f"lineage of {asset}/{key}", lineage)
            write_json(tmp / LINEAGE_FILE, lineage)
            _fsync_tree(tmp)
            if self.remote is not None and self.remote.exists(asset, key):
                # Another machine published this recipe first: keep the bucket's, as for a lost rename.
                shutil.rmtree(tmp, ignore_errors=True)
                self.remote.pull(asset, key)
                pending.info = read_lineage(final).get("info", {})
                pending.lost_race = True
                pending.ref = self._ref(asset, key, False, pending.info)
                return
            if self.remote is not None:
                self.remote.push(tmp, asset, key)  # before the local rename: the mirror is never ahead of the bucket
            try:
                os.rename(tmp, final)
            except OSError:
                # Another run finished the same recipe first: same key, same
                # inputs, so its artifact is as good as ours. Keep theirs, and
                # describe theirs, so what we report matches what is on disk.
                if not (final / LINEAGE_FILE).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                pending.info = read_lineage(final).get("info", {})
                pending.lost_race = True
            _fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        pending.ref = self._ref(asset, key, False, pending.info)


@dataclass
class PendingArtifact:
    """A folder being written; `info` lands in lineage.json (counts, metrics)."""

    dir: Path
    info: dict[str, Any] = field(default_factory=dict)
    ref: ArtifactRef | None = None
    lost_race: bool = False  # another run renamed the same key into place first


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under root to disk before it gets its final name."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")

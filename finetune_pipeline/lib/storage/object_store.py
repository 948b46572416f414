"""Artifacts on object storage: a bucket (any fsspec URL) is the record, a local mirror the working copy.

Hugging Face, the training child and every stage read and write local folders,
so with `artifacts_root: s3://bucket/prefix` (or gs://, az://, memory://...)
artifacts are still built in a local folder (`artifacts_mirror`) and the bucket
holds what every machine shares:

    <url>/<asset>/<key>/lineage.json            the commit: present = the artifact exists
    <url>/<asset>/<key>/files-<id>/<file>...    its payload; <id> = sha256 of that lineage.json

Object stores have no atomic folder rename, but one object PUT is atomic. So a
payload is uploaded first under a prefix named after the lineage that
describes it, and lineage.json is written last: a prefix without lineage.json
(a killed upload) is never read, and two writers of the same key each upload
their own payload, so the lineage that wins always names a complete payload of
its own. A pull downloads into a temporary folder of the mirror, checks every
file's sha256 against the lineage, and renames the folder into place.

Credentials never appear in config or lineage: fsspec's backends read them
from the environment (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS...).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.storage.hashing import hash_file
from finetune_pipeline.lib.storage.layout import LINEAGE_FILE, artifact_dir
from finetune_pipeline.lib.storage.temp_folders import temp_sibling


class RemoteArtifactError(RuntimeError):
    """A remote artifact could not be read back as it was written."""


class RemoteArtifacts:
    """The bucket side of an artifact store whose local folders live under `mirror`."""

    def __init__(self, url: str, mirror: Path, options: dict[str, Any] | None = None):
        import fsspec  # a dependency of datasets; the backend (s3fs, gcsfs...) is the user's choice

        self.url = url.rstrip("/")
        self.options = dict(options or {})
        self.mirror = Path(mirror).resolve()
        self.fs, self.base = fsspec.core.url_to_fs(self.url, **self.options)
        self.base = self.base.rstrip("/")

    def describe(self) -> dict[str, Any]:
        """What an ArtifactRef carries so another process can pull it (no credentials in here)."""
        return {"url": self.url, "options": self.options, "mirror": str(self.mirror)}

    def _remote(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    # -- content-addressed artifacts --------------------------------------------------------

    def lineage_bytes(self, asset: str, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._remote(asset, key, LINEAGE_FILE))
        except FileNotFoundError:
            return None

    def exists(self, asset: str, key: str) -> bool:
        return self.fs.exists(self._remote(asset, key, LINEAGE_FILE))

    def push(self, folder: Path, asset: str, key: str) -> None:
        """Upload a finished local artifact folder: payload first, lineage.json last."""
        lineage = (folder / LINEAGE_FILE).read_bytes()
        payload = f"files-{hashlib.sha256(lineage).hexdigest()[:16]}"
        self.put_files(folder, list(json.loads(lineage).get("outputs", {})), f"{asset}/{key}/{payload}")
        self.fs.pipe_file(self._remote(asset, key, LINEAGE_FILE), lineage)

    def put_files(self, folder: Path, rels: list[str], rel_dir: str) -> None:
        """Upload `folder`/rel to `rel_dir`/rel for each rel, in one batched call (concurrent on s3fs, gcsfs)."""
        if rels:
            self.fs.put([str(folder / r) for r in rels], [self._remote(rel_dir, r) for r in rels])

    def pull_into(self, asset: str, key: str, folder: Path) -> bool:
        """Download the artifact into `folder` (which must not exist yet); False if the bucket lacks it."""
        lineage = self.lineage_bytes(asset, key)
        if lineage is None:
            return False
        payload = f"files-{hashlib.sha256(lineage).hexdigest()[:16]}"
        outputs = json.loads(lineage).get("outputs", {})
        folder.mkdir(parents=True)
        for rel in outputs:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        try:  # one batched call, downloaded concurrently by async backends
            self.fs.get([self._remote(asset, key, payload, r) for r in outputs], [str(folder / r) for r in outputs])
        except FileNotFoundError as e:
            raise RemoteArtifactError(f"{self.url}/{asset}/{key}: lineage.json lists a file missing from "
                                      f"{payload}/ in the bucket ({e})") from e
        for rel, sha in outputs.items():
            target = folder / rel
            if not target.is_file():
                raise RemoteArtifactError(f"{self.url}/{asset}/{key}: lineage.json lists {rel} but "
                                          f"{payload}/{rel} is missing from the bucket")
            if hash_file(target) != sha:
                raise RemoteArtifactError(f"{self.url}/{asset}/{key}/{payload}/{rel}: sha256 differs from "
                                          "the one in lineage.json; the bucket copy was changed after upload")
        (folder / LINEAGE_FILE).write_bytes(lineage)  # last, as in a local write
        return True

    def pull(self, asset: str, key: str) -> Path | None:
        """Make the artifact present in the mirror; its local folder, or None if the bucket lacks it."""
        final = artifact_dir(self.mirror, asset, key)
        if (final / LINEAGE_FILE).is_file():
            return final
        # Named like a local write's temporary folder, so the next write removes it if this process dies.
        tmp = temp_sibling(final)
        try:
            if not self.pull_into(asset, key, tmp):
                return None
            try:
                os.rename(tmp, final)
            except OSError:  # another process of this machine pulled it first: same bytes
                if not (final / LINEAGE_FILE).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    # -- small mutable files (state_files.py) and the training pod's exchange -------------

    def read_state(self, rel: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._remote(rel))
        except FileNotFoundError:
            return None

    def write_state(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self._remote(rel), data)  # one PUT: readers see the old or the new file

    def get_folder(self, rel_dir: str, into: Path) -> list[str]:
        """Download every file under `rel_dir` into `into`, keeping relative names; the names."""
        prefix = self._remote(rel_dir).rstrip("/") + "/"
        rels = sorted(str(src).removeprefix(prefix) for src in self.fs.find(prefix, refresh=True))
        for rel in rels:
            (into / rel).parent.mkdir(parents=True, exist_ok=True)
        if rels:
            self.fs.get([prefix + r for r in rels], [str(into / r) for r in rels])
        return rels

    def remove_state(self, rel_dir: str) -> None:
        try:
            self.fs.rm(self._remote(rel_dir), recursive=True)
        except FileNotFoundError:
            pass

    def list_state(self, rel_dir: str) -> list[str]:
        """Names of the files directly under `rel_dir` in the bucket."""
        try:
            entries = self.fs.ls(self._remote(rel_dir), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

"""The hashes every artifact key and lineage is made of."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

KEY_LENGTH = 16


def stable_json(value: Any) -> str:
    """Canonical JSON used for every hash: sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


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
    """An artifact's key: the hash of its recipe (input keys, config, code version)."""
    return hash_text(stable_json(recipe))[:KEY_LENGTH]

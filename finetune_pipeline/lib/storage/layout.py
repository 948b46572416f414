"""Where an artifact lives: `<root>/<asset>/<key>/`, with `lineage.json` written last as its commit."""

from __future__ import annotations

import re
from pathlib import Path

LINEAGE_FILE = "lineage.json"


def artifact_dir(root: Path, asset: str, key: str) -> Path:
    """`root/asset/key`, refusing anything that is not one plain folder name each.

    Asset and key come from hashes and validated version keys; a name with a
    separator or "..", or a symlink on the way, could lead outside the root.
    """
    root = Path(root).resolve()
    plain = all(n and n not in (".", "..") and not re.search(r"[/\\\0]", n) for n in (asset, key))
    d = (root / asset / key).resolve()
    if not plain or d.parent.parent != root:
        raise ValueError(f"artifact path {asset!r}/{key!r} escapes the artifacts root {root}: "
                         "asset and key must each be one plain folder name inside it")
    return d

"""Split policies: which kept record goes to train, val or test (or is left unused).

`cleaning.clean` validates and deduplicates; this module only decides splits:
a hash of the normalised input (default), a raw file that is the test split as
published, and few-shot sampling of k records per class with a fixed seed.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from typing import Any, Protocol

from finetune_pipeline.lib.data.config import SplitConfig
from finetune_pipeline.lib.data.json_output import label_of

UNUSED = "unused"  # kept and valid, but not drawn by few-shot sampling


class SplitRecord(Protocol):
    split: str
    file: str
    row: int

    @property
    def user_input(self) -> str: ...

    @property
    def output(self) -> str: ...


def hash_split(normalised_input: str, val_fraction: float, test_fraction: float) -> str:
    digest = hashlib.sha256(normalised_input.encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def sample_per_class(records: list[SplitRecord], split: str, k: int, cfg: SplitConfig) -> dict[str, Any]:
    """Keep k records of each class in `split`, drawn with cfg.seed; mark the rest UNUSED.

    Draws depend only on the records (ordered by file and row) and the seed, so
    the same data and config give the same few-shot set. Returns what a reader
    of stats.json needs: classes, drawn, unused, and classes with fewer than k.
    """
    by_class: dict[str | None, list[SplitRecord]] = defaultdict(list)
    for r in records:
        if r.split == split:
            by_class[label_of(r.output, cfg.class_field)].append(r)
    if None in by_class:
        rows = ", ".join(f"{r.file} row {r.row}" for r in by_class[None][:5])
        raise ValueError(f"data.split.{split}_per_class: {len(by_class[None])} {split} record(s) have no "
                         f"{cfg.class_field!r} in their JSON output (e.g. {rows}); set data.split.class_field")
    # One generator per class, seeded by the class name too: adding a class never changes another's draw.
    drawn, short = 0, {}
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda r: (r.file, r.row))
        rng = random.Random(f"{cfg.seed}:{split}:{label}")
        chosen = set(map(id, rng.sample(members, min(k, len(members)))))
        for r in members:
            if id(r) not in chosen:
                r.split = UNUSED
        drawn += len(chosen)
        if len(members) < k:
            short[label] = len(members)
    return {"per_class": k, "classes": len(by_class), "drawn": drawn, "classes_with_fewer": short}

"""A prompt recipe: what a prompting baseline adds to every request (k-shot turns, a decoding constraint).

A prompted model version (kind `prompted`) is a model as it is plus one of
these. The recipe is saved as `prompt.json` in its `prompt_recipe` artifact,
so the shots shown (the training rows, by line and content hash) and the
allowed answers are part of the version's key and its lineage.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from finetune_pipeline.lib.data.json_output import label_of

FILE = "prompt.json"
# The JSON shape is enumerated for the trie constraint (constrained.py); past this it is no longer a shape.
MAX_JSON_SHAPES = 5000


class Shot(BaseModel):
    """One training example shown in the prompt: its line in train.jsonl, its content hash, and its two turns."""

    line: int
    sha256: str
    user: str
    assistant: str


class PromptRecipe(BaseModel):
    shots: list[Shot] = Field(default_factory=list)
    draw: Literal["per_class", "random", "none"] = "none"
    class_field: str = ""
    constraint: Literal["", "json", "labels"] = ""
    allowed_outputs: list[str] = Field(default_factory=list)  # the answers a constrained version may give

    def apply(self, conversation: Sequence[dict[str, str]]) -> list[dict[str, str]]:
        """The conversation with the shots as earlier user/assistant turns, after any system turn."""
        conversation = list(conversation)
        head = conversation[:1] if conversation and conversation[0].get("role") == "system" else []
        turns = [t for s in self.shots for t in ({"role": "user", "content": s.user},
                                                 {"role": "assistant", "content": s.assistant})]
        return [*head, *turns, *conversation[len(head):]]

    def save(self, folder: Path) -> None:
        (Path(folder) / FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "PromptRecipe":
        return cls.model_validate_json((Path(folder) / FILE).read_text())


def row_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record["messages"], sort_keys=True).encode()).hexdigest()[:16]


def draw_shots(train: Sequence[dict[str, Any]], k: int, draw: str, class_field: str, seed: int) -> list[Shot]:
    """k examples of the training split (chat records), drawn with `seed`: per class in turn, or at random."""
    if k == 0:
        return []
    if k > len(train):
        raise ValueError(f"baselines: {k} shots asked for, but the training split has {len(train)} rows")
    rng = random.Random(seed)
    if draw == "random":
        lines = rng.sample(range(len(train)), k)
    else:
        by_class: dict[str, list[int]] = {}
        for i, record in enumerate(train):
            value = label_of(record["messages"][-1]["content"], class_field)
            by_class.setdefault("" if value is None else value, []).append(i)
        if set(by_class) == {""}:
            raise ValueError(f"baselines: draw per_class by field {class_field!r}, but no training output has it")
        classes = sorted(by_class)
        rng.shuffle(classes)
        for rows in by_class.values():
            rng.shuffle(rows)
        # One of each class in turn (round robin) until k: every class is shown before any is shown twice.
        lines = [i for group in itertools.zip_longest(*(by_class[c] for c in classes)) for i in group
                 if i is not None][:k]
    return [Shot(line=i + 1, sha256=row_hash(train[i]), user=_turn(train[i], "user"),
                 assistant=train[i]["messages"][-1]["content"]) for i in lines]


def _turn(record: dict[str, Any], role: str) -> str:
    return [m["content"] for m in record["messages"] if m["role"] == role][-1]


def json_shape_outputs(train: Sequence[dict[str, Any]]) -> list[str]:
    """Every valid answer of the task's JSON shape: each field one of the values it has in the training split.

    The answers are rendered as the training outputs are (their key order and separators), so the constraint
    allows exactly what the fine-tuned model was taught to write. Refused where the outputs are not one JSON
    shape of text fields with few values (free text has no finite set of answers to constrain to).
    """
    outputs = [r["messages"][-1]["content"] for r in train]
    objects = []
    for n, text in enumerate(outputs, 1):
        try:
            obj = json.loads(text)
        except ValueError:
            raise ValueError(f"baselines: constrained json needs JSON outputs; training row {n} is not JSON") from None
        if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
            raise ValueError(f"baselines: constrained json needs objects of text fields; training row {n} is not")
        if json.dumps(obj, ensure_ascii=False) != text:
            raise ValueError(f"baselines: training row {n}'s output is not rendered as json.dumps renders it, so "
                             "the constraint could not match it")
        objects.append(obj)
    keys = list(objects[0])
    if any(list(o) != keys for o in objects):
        raise ValueError(f"baselines: constrained json needs one shape; training outputs have other keys than {keys}")
    values = [sorted({o[k] for o in objects}) for k in keys]
    count = 1
    for v in values:
        count *= len(v)
    if count > MAX_JSON_SHAPES:
        raise ValueError(f"baselines: constrained json would allow {count} answers (fields "
                         f"{dict(zip(keys, map(len, values)))} values); more than {MAX_JSON_SHAPES} is free text")
    return [json.dumps(dict(zip(keys, combo)), ensure_ascii=False) for combo in itertools.product(*values)]

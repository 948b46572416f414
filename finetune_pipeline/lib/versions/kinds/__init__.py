"""Kinds of model version: what a version is decides how it is evaluated, served, priced and retrained.

Each kind is one module here with a `KIND` object, listed once in `KINDS`.
The rest of the code asks the kind instead of comparing kind names:

- `check(version)`: what a version of this kind must have (weights, a remote id);
- `remote`: evaluated through an OpenAI-compatible endpoint by `version.remote_id`
  rather than from local weights;
- `training_cost(version, store, costs)`: wall time, tokens, device-hours, USD;
- `trained_from(version, store)`: the raw files and config it was trained from,
  for the nightly retraining check (None: not trained by this pipeline);
- `serving_spec(version, store, serving)`: the commands that serve it;
- `answered_by(version)`, `prompt_recipe(version, store)`: another version whose weights answer for it, and
  what it adds to every request (a prompting baseline's shots and constraint);
- `base_version(version)`: the base model version forgetting is measured against.

Adding a kind: write `kinds/<name>.py` with a `KIND` (a subclass of
`LocalWeightsKind` for anything with local weights; see `base.py`, about
twenty lines) and add it to `KINDS`.
"""

from __future__ import annotations

from finetune_pipeline.lib.versions.kinds import base, full, lora_merged, openai, prompted
from finetune_pipeline.lib.versions.kinds.kind import VersionKind

KINDS: dict[str, VersionKind] = {k.name: k for k in (base.KIND, lora_merged.KIND, full.KIND, openai.KIND,
                                                     prompted.KIND)}


def get(name: str) -> VersionKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"model version kind must be one of {tuple(KINDS)}, got {name!r}") from None

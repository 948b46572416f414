"""The general-ability suite: forgetting measured on every local model version (the general_eval asset).

Three artifacts:
- `general_suite`: the suite file (eval.general.suite, default data/general_eval.jsonl), keyed by its content;
- `general_reference`: the base model's own greedy answers to the suite, with the base model's likelihood of
  them and of the suite's references (one per base model and suite);
- `general_eval`: one version's likelihood of the same two sets of answers, and the change from its base.

Two measures, both mean negative log-likelihood per answer token (nats, teacher-forced, the tokens training
puts under the loss):
- `general/nll` of the suite's hand-written references: general ability against a fixed standard;
- `general/base_answer_nll` of the base model's own greedy answers. Under the base they are its most likely
  answers, so this rises as soon as a fine-tune moves the model away from what it used to say: its increase
  over the base (`general/drift`) is the forgetting, measured without trusting any reference to be what a
  small model would say. `general/nll_delta` is the same change on the references.

Scored on the weights: a prompting baseline changes no weights, so it scores what the model it prompts scores
(the same artifact, a cache hit) and its drift is 0. A remote model (OpenAI) gives no likelihoods: its report
says so and has no metrics.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from finetune_pipeline.lib import PROJECT_ROOT
from finetune_pipeline.lib.config import PipelineConfig
from finetune_pipeline.lib.evaluation.general_suite import GeneralPrompt, read_general_suite
from finetune_pipeline.lib.evaluation.significance import ConfidenceInterval, bootstrap_ci
from finetune_pipeline.lib.stages.common import artifact_key, build_artifact, registry, store
from finetune_pipeline.lib.stages.evaluation import answering_version, is_remote
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.storage.hashing import hash_file
from finetune_pipeline.lib.versions import kinds
from finetune_pipeline.lib.versions.version import ModelVersion

log = logging.getLogger(__name__)
SHIPPED_SUITE = PROJECT_ROOT / "data" / "general_eval.jsonl"
SUITE_FILE, ANSWERS_FILE, REPORT_FILE = "suite.jsonl", "base_answers.jsonl", "general_report.json"


class GeneralReport(BaseModel):
    """A general_eval artifact's report (its lineage info): the metrics, their intervals, or why there are none."""

    weights_of: str  # the version whose weights were scored (a prompted baseline's model)
    base_version: str | None = None
    suite: str
    rows: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    intervals: dict[str, ConfidenceInterval] = Field(default_factory=dict)
    note: str | None = None
    seconds: float = 0.0


def suite_path(cfg: PipelineConfig) -> Path:
    return cfg.path(cfg.eval.general.suite) if cfg.eval.general.suite else SHIPPED_SUITE


def general_suite(cfg: PipelineConfig, run_id: str | None = None) -> ArtifactRef:
    """The suite as its own artifact, keyed by its content: only a changed suite makes general evals stale."""
    path = suite_path(cfg)
    if not path.is_file():
        raise FileNotFoundError(f"eval.general.suite: {path} does not exist")
    prompts = read_general_suite(path)  # bad rows are one-line errors naming file:line
    sha = hash_file(path)

    def build(out: Path) -> dict:
        shutil.copyfile(path, out / SUITE_FILE)
        return {"rows": len(prompts), "sha256": sha, "source": str(path)}

    return build_artifact(cfg, "general_suite", build, key=sha[:16], inputs=[{"asset": "general suite",
                                                                             "path": str(path), "sha256": sha}],
                          unchanged=f"general suite unchanged (sha256 {sha[:16]})", run_id=run_id)


def _load(cfg: PipelineConfig, version: ModelVersion):
    from finetune_pipeline.lib.models.base_models import load_for_inference, load_tokenizer

    weights = version.weights_dir(store(cfg))
    return load_for_inference(weights, cfg.model.dtype), load_tokenizer(weights)


def _score(model, tokenizer, prompts: list[GeneralPrompt], answers: list[str], batch_size: int) -> list[dict]:
    from finetune_pipeline.lib.evaluation.answer_nll import answer_nll

    rows = answer_nll(model, tokenizer, [p.messages for p in prompts], answers, batch_size=batch_size)
    return [{"nll": r.nll, "tokens": r.tokens} for r in rows]


def general_reference(cfg: PipelineConfig, base: ModelVersion, suite: ArtifactRef, run_id: str | None = None
                      ) -> ArtifactRef:
    """The base model's greedy answers to the suite, and the base's likelihood of them and of the references."""
    g = cfg.eval.general
    recipe = _reference_recipe(cfg, base, suite)

    def build(out: Path) -> dict:
        from finetune_pipeline.lib.evaluation.generate import generate_batched

        prompts = read_general_suite(suite.dir / SUITE_FILE)
        model, tokenizer = _load(cfg, base)
        answers = generate_batched(model, tokenizer, [p.messages for p in prompts], max_new_tokens=g.max_new_tokens,
                                   batch_size=g.batch_size)
        on_refs = _score(model, tokenizer, prompts, [p.reference for p in prompts], g.batch_size)
        on_answers = _score(model, tokenizer, prompts, answers, g.batch_size)
        with open(out / ANSWERS_FILE, "w") as f:
            for p, a, r, s in zip(prompts, answers, on_refs, on_answers):
                f.write(json.dumps({"line": p.line, "answer": a, "reference": r, "answer_score": s}) + "\n")
        log.info("general_reference[%s]: %d greedy answers of the base model", base.key, len(answers))
        return {"base_version": base.key, "rows": len(prompts), "nll": _mean(on_refs),
                "base_answer_nll": _mean(on_answers)}

    return build_artifact(cfg, "general_reference", build, recipe=recipe,
                          inputs=[suite, {"asset": "model_version", "key": base.key, **recipe["base"]}],
                          unchanged=f"base answers of {base.key}", run_id=run_id)


def _reference_recipe(cfg: PipelineConfig, base: ModelVersion, suite: ArtifactRef) -> dict[str, Any]:
    return {"base": _weights_id(base), "suite": suite.key, "max_new_tokens": cfg.eval.general.max_new_tokens,
            "dtype": cfg.model.dtype}


def _reference_key(cfg: PipelineConfig, base_key: str | None, suite: ArtifactRef) -> str | None:
    """The general_reference artifact key of a base version (computed, nothing built)."""
    if base_key is None:
        return None
    return artifact_key("general_reference", _reference_recipe(cfg, registry(cfg).get(base_key), suite))


def _weights_id(version: ModelVersion) -> dict[str, Any]:
    """What decides the scores: the weights (the artifact that made them, or their folder), not the version key."""
    if version.artifact:
        return {"artifact": f"{version.artifact.asset}/{version.artifact.key}", "weights": version.weights}
    return {"weights": version.weights}


def _recipe(cfg: PipelineConfig, version: ModelVersion, suite: ArtifactRef) -> dict[str, Any]:
    answering = answering_version(cfg, version)
    g = cfg.eval.general
    if is_remote(answering):
        return {"remote": answering.remote_id, "suite": suite.key}
    base = _base_of(answering)
    return {"weights": _weights_id(answering), "suite": suite.key, "base": base,
            "reference": _reference_key(cfg, base, suite), "max_new_tokens": g.max_new_tokens,
            "dtype": cfg.model.dtype, "resamples": cfg.eval.resamples}


def _base_of(version: ModelVersion) -> str | None:
    return kinds.get(version.kind).base_version(version)


def general_eval_key(cfg: PipelineConfig, version_key: str, suite: ArtifactRef) -> str:
    return artifact_key("general_eval", _recipe(cfg, registry(cfg).get(version_key), suite))


def general_eval(cfg: PipelineConfig, version_key: str, suite: ArtifactRef, run_id: str | None = None
                 ) -> ArtifactRef:
    """One version's general-suite report (general_report.json, rows.jsonl): its metrics and their intervals."""
    import time

    version = registry(cfg).get(version_key)
    answering = answering_version(cfg, version)
    recipe = _recipe(cfg, version, suite)

    def build(out: Path) -> dict:
        started = time.time()
        report = GeneralReport(weights_of=answering.key, suite=suite.key)
        if is_remote(answering):
            report.note = (f"{answering.key} answers through an API ({answering.remote_id}), which gives no "
                           "likelihoods: the general suite cannot score it")
        else:
            _score_version(cfg, answering, suite, report, out, run_id)
        report.seconds = round(time.time() - started, 2)
        (out / REPORT_FILE).write_text(report.model_dump_json(indent=2) + "\n")
        log.info("general_eval[%s]: %s", version_key, report.metrics or report.note)
        return report.model_dump(exclude_none=True)

    inputs: list = [suite, {"asset": "model_version", "key": answering.key}]
    if recipe.get("reference"):  # the base model's answers the drift is measured on
        inputs.append({"asset": "general_reference", "key": recipe["reference"], "version": recipe["base"]})
    return build_artifact(cfg, "general_eval", build, recipe=recipe, inputs=inputs,
                          unchanged=f"{answering.key}'s weights already scored on general suite {suite.key}",
                          run_id=run_id)


def _score_version(cfg: PipelineConfig, version: ModelVersion, suite: ArtifactRef, report: GeneralReport,
                   out: Path, run_id: str | None) -> None:
    g = cfg.eval.general
    base_key = _base_of(version)
    reference = None
    if base_key is not None:
        reference = general_reference(cfg, registry(cfg).get(base_key), suite, run_id)
        report.base_version = base_key
    prompts = read_general_suite(suite.dir / SUITE_FILE)
    model, tokenizer = _load(cfg, version)
    on_refs = _score(model, tokenizer, prompts, [p.reference for p in prompts], g.batch_size)
    report.rows = len(prompts)
    report.metrics["general/nll"] = _mean(on_refs)
    report.intervals["general/nll"] = _interval(on_refs, None, cfg.eval.resamples)
    rows: list[dict[str, Any]] = [{"line": p.line, "reference": s} for p, s in zip(prompts, on_refs)]
    if reference is not None:
        base_rows = [json.loads(line) for line in (reference.dir / ANSWERS_FILE).read_text().splitlines() if line]
        on_answers = _score(model, tokenizer, prompts, [r["answer"] for r in base_rows], g.batch_size)
        base_on_refs, base_on_answers = [r["reference"] for r in base_rows], [r["answer_score"] for r in base_rows]
        report.metrics.update({
            "general/base_answer_nll": _mean(on_answers),
            "general/nll_delta": round(_mean(on_refs) - _mean(base_on_refs), 4),
            "general/drift": round(_mean(on_answers) - _mean(base_on_answers), 4)})
        report.intervals.update({
            "general/base_answer_nll": _interval(on_answers, None, cfg.eval.resamples),
            "general/nll_delta": _interval(on_refs, base_on_refs, cfg.eval.resamples),
            "general/drift": _interval(on_answers, base_on_answers, cfg.eval.resamples)})
        for row, s in zip(rows, on_answers):
            row["base_answer"] = s
    with open(out / "rows.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _mean(rows: list[dict]) -> float:
    return round(sum(r["nll"] for r in rows) / max(sum(r["tokens"] for r in rows), 1), 4)


def _interval(rows: list[dict], minus: list[dict] | None, resamples: int) -> ConfidenceInterval:
    """Bootstrap over suite rows of the token-weighted mean (or its difference from the base's, row-paired)."""
    import numpy as np

    nll, tok = np.array([r["nll"] for r in rows]), np.array([r["tokens"] for r in rows])
    if minus is not None:
        base_nll, base_tok = np.array([r["nll"] for r in minus]), np.array([r["tokens"] for r in minus])

    def statistic(idx) -> float:
        value = nll[idx].sum() / max(tok[idx].sum(), 1)
        return float(value - base_nll[idx].sum() / max(base_tok[idx].sum(), 1)) if minus is not None else float(value)

    ci = bootstrap_ci(len(rows), statistic, resamples=resamples)
    return ci.model_copy(update={"low": round(ci.low, 4), "high": round(ci.high, 4)})

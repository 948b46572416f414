"""The `vllm` eval backend: offline vllm.LLM in a child process of the serving environment, on CPU too.

The slow test starts vLLM once (about 80 s on 2 cores) and runs model_eval
through it with free and label-constrained generation; the fast ones check the
two clear errors (no serving environment; the child failing).
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import config_from_dict
from finetune_pipeline.lib.evaluation.backends import BackendError, TransformersBackend, VllmBackend
from finetune_pipeline.lib.evaluation.classification import allowed_outputs
from finetune_pipeline.lib.evaluation.config import VllmConfig
from finetune_pipeline.lib.evaluation.report import EvalReport
from finetune_pipeline.lib.evaluation.vllm_backend import child_settings
from finetune_pipeline.lib.models.serving_env import ENV_VAR, SETUP_HINT, serving_python
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.versions.registry import Registry
from finetune_pipeline_tests.helpers import SYSTEM, write_jsonl

ROWS = {
    "I was charged twice for my plan": "billing",
    "Where is my parcel, it is late": "shipping",
    "Love the new dashboard, thanks!": "feedback",
    "The app crashes when I open settings": "bug",
}
LABELS = sorted(set(ROWS.values()))
CONVERSATIONS = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}] for text in ROWS]


def test_no_serving_environment_names_the_setup_command(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "no-such-python"))
    with pytest.raises(BackendError, match=rf"serving environment .*`{SETUP_HINT}`"):
        VllmBackend(tiny_model_dir).generate(CONVERSATIONS, 4)


def test_child_failure_is_a_backend_error_with_its_stderr(monkeypatch, tiny_model_dir):
    # The project's own Python has no vllm: a real child that fails at its import.
    monkeypatch.setenv(ENV_VAR, sys.executable)
    with pytest.raises(BackendError, match=r"vLLM failed to start \(exit 1\): ModuleNotFoundError: No module named "
                                           r"'vllm'(.|\n)*--- the end of its stderr ---\nTraceback"):
        VllmBackend(tiny_model_dir).generate(CONVERSATIONS, 4)


def test_child_settings_follow_the_device(tiny_model_dir):
    cpu = child_settings(tiny_model_dir, VllmConfig(), on_cuda=False)
    # The transformers backend's precision on each device; eager on CPU (start-up), KV cache from the config.
    assert cpu["llm"]["dtype"] == "float32" and cpu["llm"]["enforce_eager"] is True
    assert cpu["env"] == {"VLLM_CPU_KVCACHE_SPACE": "1"} and "gpu_memory_utilization" not in cpu["llm"]
    assert cpu["llm"]["max_model_len"] == 2048  # 4096 capped at the tiny model's own context
    gpu = child_settings(tiny_model_dir, VllmConfig(gpu_memory_utilization=0.5), on_cuda=True)
    assert gpu["llm"]["dtype"] == "bfloat16" and gpu["llm"]["enforce_eager"] is False
    assert gpu["llm"]["gpu_memory_utilization"] == 0.5 and gpu["env"] == {}
    chosen = child_settings(tiny_model_dir, VllmConfig(dtype="float32", enforce_eager=True, max_model_len=512), True)
    assert (chosen["llm"]["dtype"], chosen["llm"]["enforce_eager"], chosen["llm"]["max_model_len"]) == \
        ("float32", True, 512)


@pytest.fixture(scope="module")
def vllm_tiny_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with head_dim 32: vLLM's CPU attention supports head sizes 32..512, the tiny model has 16."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, 32
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-head32")
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "generation")):
            shutil.copy(f, out / f.name)
    return out


@pytest.mark.slow
@pytest.mark.skipif(serving_python() is None, reason=f"needs the serving environment: {SETUP_HINT}")
def test_vllm_eval_matches_transformers_and_constrains_to_labels(tmp_path, vllm_tiny_model):
    (tmp_path / "labels.json").write_text(json.dumps(LABELS))
    cfg = config_from_dict({"artifacts_root": str(tmp_path / "artifacts"),
                            "eval": {"backend": "vllm", "max_new_tokens": 12,
                                     "classification": {"field": "category", "labels_file": "labels.json",
                                                        "constrained": True}}}, tmp_path)
    write_jsonl(tmp_path / "dataset" / "test.jsonl",
                [{"messages": [*c, {"role": "assistant", "content": json.dumps({"category": label})}]}
                 for c, label in zip(CONVERSATIONS, ROWS.values())])
    eval_set = stages.eval_set(cfg, ArtifactRef("training_dataset", "d0", str(tmp_path / "dataset")))
    Registry(cfg.artifacts_dir).register("base-tiny", "base", weights=str(vllm_tiny_model))

    ref = stages.model_eval(cfg, "base-tiny", eval_set)  # one vLLM start: free, then constrained

    report = EvalReport.load(ref.dir, with_predictions=True)
    assert report.backend == {"backend": "vllm", "dtype": "auto", "max_model_len": 4096}
    with_vllm = [row.prediction for row in report.predictions]
    with_hf = TransformersBackend(vllm_tiny_model, 1).generate(CONVERSATIONS, 12)
    # Same fp32 weights, both greedy: the answers are equal. vLLM's CPU kernels add in another order than
    # torch's, which could flip a near-tie between two tokens; on this model's outputs none occurs, so the
    # tolerance is none (a flip would show here as a one-word difference to look at, not noise to absorb).
    assert with_vllm == with_hf
    forced = [row.prediction for row in report.constrained_predictions]
    assert len(forced) == len(ROWS) and set(forced) <= set(allowed_outputs("category", LABELS))
    assert "constrained/accuracy" in report.metrics

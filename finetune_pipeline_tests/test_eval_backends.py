"""Eval backends: dispatch by version kind and config, and the OpenAI-compatible client against
recorded request/response shapes (respx). The vllm backend's own tests are in test_vllm_backend.py."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import respx

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import config_from_dict
from finetune_pipeline.lib.evaluation.backends import (
    BackendError,
    OpenAICompatibleBackend,
    TransformersBackend,
    VllmBackend,
)
from finetune_pipeline.lib.stages import backend_for
from finetune_pipeline.lib.storage.artifacts import ArtifactRef
from finetune_pipeline.lib.versions.registry import Registry
from finetune_pipeline.lib.versions.version import ModelVersion
from finetune_pipeline_tests.helpers import SYSTEM, write_jsonl

# openai>=3 sends through httpx2/httpcore2, which respx reaches with pytest-httpx2's mocker (dev extra);
# older clients use httpx/httpcore, which respx mocks by itself.
MOCKER = "httpcore2" if "httpx2" in openai._base_client.__dict__ else "httpcore"
if MOCKER == "httpcore2":
    pytest.importorskip("pytest_httpx2", reason="needs pytest-httpx2 (dev extra) to mock the openai client's httpx2")

REMOTE_ID = "ft:gpt-4o-mini-2024-07-18:acme::B2x9Kq1L"
ANSWERS = {
    "I was charged twice for my plan": {"category": "billing", "sentiment": "negative", "priority": "high"},
    "Where is my parcel, it is late": {"category": "shipping", "sentiment": "neutral", "priority": "medium"},
    "Love the new dashboard, thanks!": {"category": "feedback", "sentiment": "positive", "priority": "low"},
}


def _completion(content: str, model: str) -> dict:
    """The shape of a real /v1/chat/completions response from OpenAI."""
    return {
        "id": "chatcmpl-BXq3nJ0mFzYH7a8", "object": "chat.completion", "created": 1748000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None,
                                             "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 17, "total_tokens": 48,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_7f2a1c3b9d",
    }


def _answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    user = body["messages"][-1]["content"]
    return httpx.Response(200, json=_completion(json.dumps(ANSWERS[user]), body["model"]))


@pytest.fixture
def cfg(tmp_path):
    return config_from_dict({"artifacts_root": str(tmp_path / "artifacts"),
                             "eval": {"openai": {"base_url": "https://api.openai.com/v1", "concurrency": 3}}},
                            tmp_path)


@pytest.fixture
def eval_set(cfg, tmp_path) -> ArtifactRef:
    records = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                             {"role": "assistant", "content": json.dumps(labels)}]}
               for text, labels in ANSWERS.items()]
    write_jsonl(tmp_path / "dataset" / "test.jsonl", records)
    dataset = ArtifactRef("training_dataset", "d0", str(tmp_path / "dataset"))
    return stages.eval_set(cfg, dataset)


def test_backend_follows_version_kind_then_config(cfg):
    remote = backend_for(cfg, ModelVersion(key="ft-acme", kind="openai", remote_id=REMOTE_ID))
    assert isinstance(remote, OpenAICompatibleBackend)
    assert remote.identity() == {"backend": "openai", "base_url": "https://api.openai.com/v1", "model": REMOTE_ID}
    local = ModelVersion(key="lora-abc", kind="lora_merged", weights="/m/lora")
    assert isinstance(backend_for(cfg, local), TransformersBackend)  # the default
    cfg.eval.backend = "vllm"
    vllm = backend_for(cfg, local)
    assert isinstance(vllm, VllmBackend) and vllm.identity()["backend"] == "vllm"  # enters the recipe key
    cfg.eval.backend = "openai"
    cfg.eval.openai.base_url = "http://127.0.0.1:8000/v1"
    assert backend_for(cfg, local).model == "lora-abc"  # {key}: what serving_spec's --served-model-name says
    cfg.eval.openai.model_name = "{path}"
    assert backend_for(cfg, local).model == "/m/lora"  # what `transformers serve <dir>` calls it


def test_openai_version_is_evaluated_through_the_endpoint_by_remote_id(cfg, eval_set, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    Registry(cfg.artifacts_dir).register("ft-acme", "openai", remote_id=REMOTE_ID,
                                         info={"base_model": "gpt-4o-mini-2024-07-18", "trained_tokens": 30_000})
    with respx.mock(using=MOCKER, assert_all_called=True) as mock:
        route = mock.post("https://api.openai.com/v1/chat/completions").mock(side_effect=_answer)
        ref = stages.model_eval(cfg, "ft-acme", eval_set)
    assert ref.info["metrics"]["exact_match"] == 1.0 and ref.info["metrics"]["n"] == 3
    # The 3 rows, then each sent alone again for the single-request latency (eval.latency_requests, capped at 3).
    assert route.call_count == 6
    sent = [json.loads(call.request.content) for call in route.calls]
    assert {s["model"] for s in sent} == {REMOTE_ID}
    assert all(s["temperature"] == 0 and s["max_completion_tokens"] == cfg.eval.max_new_tokens for s in sent)
    # The reference answer is never sent, only system + user.
    assert all([m["role"] for m in s["messages"]] == ["system", "user"] for s in sent)
    assert route.calls[0].request.headers["authorization"] == "Bearer sk-test-key"
    predictions = [json.loads(line)["prediction"] for line in open(ref.dir / "predictions.jsonl")]
    assert [json.loads(p) for p in predictions] == list(ANSWERS.values())  # input order, despite concurrency


def test_openai_without_key_fails_before_any_request(cfg, eval_set, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    Registry(cfg.artifacts_dir).register("ft-acme", "openai", remote_id=REMOTE_ID)
    with respx.mock(using=MOCKER, assert_all_called=False) as mock:
        route = mock.post("https://api.openai.com/v1/chat/completions")
        with pytest.raises(BackendError, match=r"needs an API key in \$OPENAI_API_KEY"):
            stages.model_eval(cfg, "ft-acme", eval_set)
    assert route.call_count == 0


def test_unknown_remote_model_is_a_clear_error(cfg, eval_set, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    Registry(cfg.artifacts_dir).register("ft-gone", "openai", remote_id="ft:gpt-4o-mini-2024-07-18:acme::deleted")
    error = {"error": {"message": "The model `ft:gpt-4o-mini-2024-07-18:acme::deleted` does not exist or you do "
                                  "not have access to it.", "type": "invalid_request_error", "param": None,
                       "code": "model_not_found"}}
    with respx.mock(using=MOCKER) as mock:
        mock.post("https://api.openai.com/v1/chat/completions").mock(return_value=httpx.Response(404, json=error))
        with pytest.raises(BackendError, match=r"refused model 'ft:gpt-4o-mini-2024-07-18:acme::deleted': HTTP 404"):
            stages.model_eval(cfg, "ft-gone", eval_set)
    assert not list((cfg.artifacts_dir / "model_eval").glob("*/report.json"))  # nothing half-written


def test_unreachable_endpoint_names_the_url(cfg, eval_set):
    cfg.eval.backend = "openai"
    cfg.eval.openai.base_url = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    cfg.eval.openai.max_retries = 0
    Registry(cfg.artifacts_dir).register("base-x", "base", weights="/models/x")
    with pytest.raises(BackendError, match=r"cannot reach the eval endpoint http://127.0.0.1:9/v1"):
        stages.model_eval(cfg, "base-x", eval_set)


"""Costs by device: a recorded device -> its price key, training cost from lineage, inference cost per 1,000
requests."""

from __future__ import annotations

import pytest

from finetune_pipeline.lib.config import config_from_dict
from finetune_pipeline.lib.evaluation.report import EvalReport, TokenUsage
from finetune_pipeline.lib.models.device import DeviceInfo
from finetune_pipeline.lib.stages.promotion import version_inference_cost
from finetune_pipeline.lib.versions.config import CostConfig
from finetune_pipeline.lib.versions.costs import inference_cost, price_key, training_cost
from finetune_pipeline.lib.versions.leaderboard import Leaderboard, LeaderboardRow
from finetune_pipeline.lib.versions.version import ModelVersion

PRICES = CostConfig().hourly_usd  # the defaults: cpu, a10g, l4, a100-80gb, h100


def gpu(name: str, count: int = 1) -> DeviceInfo:
    return DeviceInfo(type="cuda", name=name, count=count)


@pytest.mark.parametrize(("device", "key"), [
    (DeviceInfo(type="cpu", name="AMD EPYC 7B13"), "cpu"),
    (gpu("NVIDIA H100 80GB HBM3"), "h100"),
    (gpu("NVIDIA A100-SXM4-80GB"), "a100-80gb"),
    (gpu("NVIDIA A100 80GB PCIe"), "a100-80gb"),
    (gpu("NVIDIA L4"), "l4"),
    (gpu("NVIDIA A10G"), "a10g"),
    # No price for these: a 40 GB A100 is not priced as the 80 GB one, an A10 not as an A10G.
    (gpu("NVIDIA A100-PCIE-40GB"), None),
    (gpu("NVIDIA A10"), None),
    (gpu("NVIDIA H200"), None),
])
def test_device_to_price_key(device, key):
    assert price_key(device, PRICES) == key


def test_a_whole_gpu_name_or_an_rtx_number_can_have_its_own_price():
    prices = {"nvidia-h100-80gb-hbm3": 2.0, "h100": 4.5, "rtx4090": 0.4}
    assert price_key(gpu("NVIDIA H100 80GB HBM3"), prices) == "nvidia-h100-80gb-hbm3"
    assert price_key(gpu("NVIDIA H100 PCIe"), prices) == "h100"
    assert price_key(gpu("NVIDIA GeForce RTX 4090"), prices) == "rtx4090"


def test_training_cost_from_a_recorded_gpu_multiplies_by_its_count():
    costs = CostConfig(device="cpu", hourly_usd={"cpu": 0.1, "h100": 4.0})
    one = training_cost({"train_seconds": 1800, "tokens_seen": 1000,
                         "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 1}}, costs)
    assert one.cost_usd == pytest.approx(2.0) and one.device == "NVIDIA H100 80GB HBM3"
    assert one.tokens_trained == 1000 and one.device_hours == pytest.approx(0.5)
    four = training_cost({"train_seconds": 1800, "num_processes": 4,
                          "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 4}}, costs)
    assert four.cost_usd == pytest.approx(8.0) and four.device_hours == pytest.approx(2.0)
    assert four.device == "NVIDIA H100 80GB HBM3 x4"


def test_unknown_gpu_has_no_cost_and_a_note_naming_it_never_the_cpu_price():
    costs = CostConfig(device="cpu")
    cost = training_cost({"train_seconds": 3600, "device": {"type": "cuda", "name": "NVIDIA H200", "count": 2}},
                         costs)
    assert cost.cost_usd is None
    assert "NVIDIA H200" in cost.cost_note and "h200" in cost.cost_note
    assert cost.device_hours == pytest.approx(2.0)  # the time is still known


def test_older_lineage_a_price_key_string_or_no_device():
    costs = CostConfig(device="l4", hourly_usd={"cpu": 0.1, "l4": 0.8})
    as_string = training_cost({"train_seconds": 3600, "device": "cpu", "num_processes": 2}, costs)
    assert as_string.cost_usd == pytest.approx(0.2) and as_string.device == "cpu"
    none = training_cost({"train_seconds": 3600}, costs)  # costs.device is the fallback
    assert none.cost_usd == pytest.approx(0.8) and none.device == "l4"
    unpriced = training_cost({"train_seconds": 3600, "device": "tpu-v5"}, costs)
    assert unpriced.cost_usd is None and "tpu-v5" in unpriced.cost_note


def test_inference_cost_per_1000_requests_from_measured_latency():
    costs = CostConfig(hourly_usd={"cpu": 0.36, "l4": 0.72})
    # 0.5 s a request on the CPU: 1,000 requests take 500 s, at 0.36 $/h that is 0.05 $.
    cpu = inference_cost(50.0, 100, DeviceInfo(type="cpu", name="Intel Xeon"), costs)
    assert cpu.seconds_per_request == pytest.approx(0.5) and cpu.usd_per_1k_requests == pytest.approx(0.05)
    two = inference_cost(10.0, 100, gpu("NVIDIA L4", count=2), costs)
    assert two.usd_per_1k_requests == pytest.approx(100 / 3600 * 0.72 * 2)
    unknown = inference_cost(10.0, 100, None, costs)
    assert unknown.usd_per_1k_requests is None and unknown.seconds_per_request == pytest.approx(0.1)
    assert "which device" in unknown.note
    assert "NVIDIA H200" in inference_cost(10.0, 100, gpu("NVIDIA H200"), costs).note


def test_leaderboard_markdown_shows_devices_inference_cost_and_why_a_cost_is_unknown():
    rows = [LeaderboardRow(version="full-abc", kind="full", metrics={"exact_match": 0.5, "n": 4}, eval_key="e",
                           eval_path="/e", device="NVIDIA H200", cost_usd=None,
                           cost_note="training cost unknown: NVIDIA H200 has no price", inference_device="Intel Xeon",
                           seconds_per_request=0.5, usd_per_1k_requests=0.05)]
    text = Leaderboard.ranked("set", 4, "exact_match", rows, {}).markdown()
    header, _, row = text.splitlines()[:3]
    assert "$/1k requests" in header and "eval device" in header and "train device" in header
    assert "| NVIDIA H200 |" in row and "| 0.500 | 0.0500 | Intel Xeon |" in row
    assert "*full-abc: training cost unknown: NVIDIA H200 has no price*" in text


def _report(backend: str, device: DeviceInfo | None) -> EvalReport:
    return EvalReport(metrics={"exact_match": 1.0, "n": 10}, fields=[], generation_seconds=5.0, version="v",
                      kind="lora_merged", eval_set="e", test_file="t", backend={"backend": backend}, eval_seconds=6.0,
                      device=device)


def test_inference_cost_behind_an_endpoint_is_unknown_unless_costs_endpoint_device_says(tmp_path):
    local = ModelVersion(key="lora-abc", kind="lora_merged", weights="/m",
                         artifact={"asset": "merged_model", "key": "k"})
    remote = ModelVersion(key="openai-x", kind="openai", remote_id="ft:gpt-4o-mini:x")
    unset = config_from_dict({}, tmp_path)
    assert "costs.endpoint_device" in version_inference_cost(unset, local, _report("openai", None)).note
    on_l4 = config_from_dict({"costs": {"endpoint_device": "NVIDIA L4"}}, tmp_path)
    priced = version_inference_cost(on_l4, local, _report("openai", None))
    assert priced.device == "NVIDIA L4" and priced.usd_per_1k_requests == pytest.approx(500 / 3600 * 0.80, abs=1e-6)
    # An OpenAI model is billed per token by OpenAI, whatever the endpoint setting: without the eval's token
    # counts it is unknown, with them it is tokens x the fine-tuned model's token prices.
    billed = version_inference_cost(on_l4, remote, _report("openai", None))
    assert billed.usd_per_1k_requests is None and "recorded no tokens" in billed.note
    counted = _report("openai", None).model_copy(update={"tokens": TokenUsage(
        prompt_per_request=100, completion_per_request=10, counted_by="api usage")})
    billed = version_inference_cost(on_l4, remote, counted)
    assert billed.device == "api" and billed.usd_per_1k_requests == pytest.approx(1000 * (100 * 0.30 + 10 * 1.20) / 1e6)
    # A local backend recorded its own device, which wins.
    cpu = version_inference_cost(on_l4, local, _report("transformers", DeviceInfo(type="cpu", name="Xeon")))
    assert cpu.device == "Xeon" and cpu.usd_per_1k_requests == pytest.approx(500 / 3600 * 0.10, abs=1e-6)

"""Estimated cost of a model version from the configured price table: training, and inference per 1,000 requests.

Local training is priced from the device its lineage records (`device`: a
`DeviceInfo` {type, name, count}); the device's price key in
`costs.hourly_usd` is found by `price_key`:

1. a CPU is `cpu`;
2. a GPU's whole name, lower-cased with every run of other characters as one
   `-` ("NVIDIA H100 80GB HBM3" -> `nvidia-h100-80gb-hbm3`), for a contract
   price of one exact SKU;
3. its model and memory (`h100-80gb`, `a100-80gb`), then its model alone
   (`h100`, `l4`, `a10g`): the model is the first word with a digit once the
   vendor and brand words (nvidia, tesla, geforce, quadro, amd, instinct) are
   dropped, not counting memory (`80gb`), form factor (`sxm4`, `pcie`, `hbm3`,
   `nvl`); "RTX 4090" is `rtx4090`.

A GPU none of these finds has no price: its cost is unknown, with a note that
names it (never the CPU's price). Lineage written before the device was
recorded has no device (then `costs.device` is used) or a price key as a string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from finetune_pipeline.lib.models.device import DeviceInfo

if TYPE_CHECKING:
    from finetune_pipeline.lib.versions.config import CostConfig


class UnknownPriceError(KeyError):
    pass


class VersionCost(BaseModel):
    """What producing a version cost: the leaderboard's time and money columns."""

    train_seconds: float | None = None
    tokens_trained: int | None = None
    device: str | None = None  # what it trained on: "NVIDIA H100 80GB HBM3 x2", a price key, "openai"
    device_hours: float | None = None
    cost_usd: float | None = None
    cost_note: str | None = None  # why cost_usd is unknown

    @classmethod
    def free(cls) -> "VersionCost":
        """A version nobody trained (a base model as it is)."""
        return cls(train_seconds=0.0, tokens_trained=0, device=None, device_hours=0.0, cost_usd=0.0)


class InferenceCost(BaseModel):
    """What answering costs on the device that evaluated: from the eval's measured generation time."""

    device: str | None = None
    seconds_per_request: float | None = None
    usd_per_1k_requests: float | None = None
    note: str | None = None  # why usd_per_1k_requests is unknown


_VENDOR_WORDS = {"nvidia", "tesla", "geforce", "quadro", "amd", "instinct", "radeon"}
_NOT_A_MODEL = re.compile(r"^(\d+gb|sxm\d*|pcie\d*|hbm\d*e?|nvl\d*|gen\d+)$")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def price_candidates(device: DeviceInfo) -> list[str]:
    """The keys of hourly_usd that would price `device`, most specific first (see the module's rules)."""
    if device.type == "cpu":
        return ["cpu"]
    words = [w for w in _slug(device.name).split("-") if w and w not in _VENDOR_WORDS]
    candidates = [_slug(device.name)]
    memory = next((w for w in words if re.fullmatch(r"\d+gb", w)), None)
    for i, word in enumerate(words):
        if re.search(r"\d", word) and not _NOT_A_MODEL.match(word):
            # A bare number is a model only with the word before it: "rtx 4090" -> rtx4090.
            model = f"{words[i - 1]}{word}" if word.isdigit() and i > 0 else word
            candidates += [f"{model}-{memory}"] if memory else []
            candidates.append(model)
            break
    return list(dict.fromkeys(candidates))


def price_key(device: DeviceInfo, prices: Mapping[str, float]) -> str | None:
    """The key of `prices` for `device`, or None when it has no price."""
    return next((k for k in price_candidates(device) if k in prices), None)


def recorded_device(value: Any) -> DeviceInfo | str | None:
    """A lineage's `device`: a DeviceInfo (as the training engine records it), or, in older lineage, a price key."""
    if isinstance(value, dict):
        try:
            return DeviceInfo.model_validate(value)
        except ValidationError:
            return None
    return value if isinstance(value, str) and value else None


def device_hours(seconds: float, devices: int = 1) -> float:
    return seconds / 3600 * devices


def hourly_price(device: DeviceInfo | str, costs: "CostConfig") -> float:
    """USD per hour for one `device` (a DeviceInfo, or a price key as older lineage and costs.device give it)."""
    if isinstance(device, str):
        if device in costs.hourly_usd:
            return costs.hourly_usd[device]
        raise UnknownPriceError(f"device {device!r} has no price in costs.hourly_usd "
                                f"(known: {sorted(costs.hourly_usd)})")
    key = price_key(device, costs.hourly_usd)
    if key is None:
        raise UnknownPriceError(f"{device.type} device {device.name!r} has no price in costs.hourly_usd (tried "
                                f"{', '.join(price_candidates(device))}; known: {', '.join(sorted(costs.hourly_usd))})")
    return costs.hourly_usd[key]


def local_training_cost(seconds: float, costs: "CostConfig", devices: int = 1,
                        device: DeviceInfo | str | None = None) -> float:
    """USD for `seconds` of training on `devices` x `device` (default: costs.device)."""
    return device_hours(seconds, devices) * hourly_price(device or costs.device, costs)


def training_cost(info: Mapping[str, Any], costs: "CostConfig") -> VersionCost:
    """The cost of a local training from its artifact's lineage info (train_seconds, tokens_seen, device)."""
    seconds = float(info.get("train_seconds") or 0.0)
    device = recorded_device(info.get("device"))
    if isinstance(device, DeviceInfo):
        devices, label = device.count, device.label()
    else:  # older lineage: a price key or nothing, and the data-parallel processes
        device = device or costs.device
        devices = int(info.get("num_processes") or info.get("devices") or 1)
        label = device
    cost, note = None, None
    try:
        cost = round(local_training_cost(seconds, costs, devices, device), 6)
    except UnknownPriceError as e:
        note = f"training cost unknown: {e.args[0]}"
    return VersionCost(train_seconds=seconds, tokens_trained=info.get("tokens_seen"), device=label,
                       device_hours=round(device_hours(seconds, devices), 6), cost_usd=cost, cost_note=note)


def inference_cost(generation_seconds: float, requests: int, device: DeviceInfo | None,
                   costs: "CostConfig") -> InferenceCost:
    """USD per 1,000 requests at the eval's measured latency: generation_seconds / requests, priced by device-hour.

    The eval generates in batches, so this is the amortised time per request at the eval's batch size.
    """
    per_request = generation_seconds / requests if requests else None
    if device is None:
        return InferenceCost(seconds_per_request=per_request,
                             note="inference cost unknown: the eval does not say which device answered")
    label = device.label()
    if per_request is None:
        return InferenceCost(device=label, note="inference cost unknown: the eval scored no rows")
    try:
        usd = per_request * 1000 / 3600 * device.count * hourly_price(device, costs)
    except UnknownPriceError as e:
        return InferenceCost(device=label, seconds_per_request=round(per_request, 4),
                             note=f"inference cost unknown: {e.args[0]}")
    return InferenceCost(device=label, seconds_per_request=round(per_request, 4), usd_per_1k_requests=round(usd, 6))


def api_price_key(model: str, prices: Mapping[str, Any]) -> str | None:
    """The longest key of `prices` that `model` starts with: gpt-4o-mini-2024-07-18 -> gpt-4o-mini (not gpt-4o);
    an OpenAI fine-tuned ft:gpt-4o-mini-2024-07-18:org::id -> ft:gpt-4o-mini."""
    return max((k for k in prices if model.startswith(k)), key=len, default=None)


def api_inference_cost(model: str, tokens: Any, costs: "CostConfig") -> InferenceCost:
    """USD per 1,000 requests of an API model: the eval's tokens per request (a TokenUsage) at its token prices."""
    key = api_price_key(model, costs.api_per_1m_tokens)
    if tokens is None:
        return InferenceCost(device="api", note=f"inference cost unknown: the eval of {model} recorded no tokens")
    if key is None:
        known = ", ".join(sorted(costs.api_per_1m_tokens))
        return InferenceCost(device="api", note=f"inference cost unknown: {model} has no price in "
                                                f"costs.api_per_1m_tokens (known: {known})")
    price = costs.api_per_1m_tokens[key]
    usd = 1000 * (tokens.prompt_per_request * price.input + tokens.completion_per_request * price.output) / 1_000_000
    return InferenceCost(device="api", usd_per_1k_requests=round(usd, 6))


def endpoint_device(setting: str) -> DeviceInfo | None:
    """costs.endpoint_device as a DeviceInfo: `cpu`, a price key or a GPU name; empty = unknown."""
    if not setting:
        return None
    return DeviceInfo(type="cpu" if setting.strip().lower() == "cpu" else "cuda", name=setting.strip())


def openai_training_cost(base_model: str, trained_tokens: int, costs: "CostConfig") -> float:
    """USD for `trained_tokens` (OpenAI bills tokens x epochs) of fine-tuning `base_model`."""
    prices = costs.openai_training_per_1m_tokens
    if base_model not in prices:
        raise UnknownPriceError(f"no OpenAI training price for {base_model!r} in "
                                f"costs.openai_training_per_1m_tokens (known: {sorted(prices)})")
    return trained_tokens / 1_000_000 * prices[base_model]

"""Estimated cost of a model version from the configured price table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from finetune_pipeline.lib.versions.config import CostConfig


class UnknownPriceError(KeyError):
    pass


class VersionCost(BaseModel):
    """What producing a version cost: the leaderboard's time and money columns."""

    train_seconds: float | None = None
    tokens_trained: int | None = None
    device: str | None = None
    device_hours: float | None = None
    cost_usd: float | None = None

    @classmethod
    def free(cls) -> "VersionCost":
        """A version nobody trained (a base model as it is)."""
        return cls(train_seconds=0.0, tokens_trained=0, device=None, device_hours=0.0, cost_usd=0.0)


def device_hours(seconds: float, devices: int = 1) -> float:
    return seconds / 3600 * devices


def local_training_cost(seconds: float, costs: "CostConfig", devices: int = 1, device: str | None = None) -> float:
    """USD for `seconds` of training on `devices` x `device` (default: costs.device)."""
    device = device or costs.device
    if device not in costs.hourly_usd:
        raise UnknownPriceError(f"costs.device {device!r} has no price in costs.hourly_usd "
                                f"(known: {sorted(costs.hourly_usd)})")
    return device_hours(seconds, devices) * costs.hourly_usd[device]


def openai_training_cost(base_model: str, trained_tokens: int, costs: "CostConfig") -> float:
    """USD for `trained_tokens` (OpenAI bills tokens x epochs) of fine-tuning `base_model`."""
    prices = costs.openai_training_per_1m_tokens
    if base_model not in prices:
        raise UnknownPriceError(f"no OpenAI training price for {base_model!r} in "
                                f"costs.openai_training_per_1m_tokens (known: {sorted(prices)})")
    return trained_tokens / 1_000_000 * prices[base_model]

"""Estimated cost of a model version from the configured price table."""

from __future__ import annotations

from finetune_pipeline.lib.config import CostConfig


class UnknownPriceError(KeyError):
    pass


def device_hours(seconds: float, devices: int = 1) -> float:
    return seconds / 3600 * devices


def local_training_cost(seconds: float, costs: CostConfig, devices: int = 1) -> float:
    """USD for `seconds` of training on `devices` x `costs.device`."""
    if costs.device not in costs.hourly_usd:
        raise UnknownPriceError(f"costs.device {costs.device!r} has no price in costs.hourly_usd "
                                f"(known: {sorted(costs.hourly_usd)})")
    return device_hours(seconds, devices) * costs.hourly_usd[costs.device]


def openai_training_cost(base_model: str, trained_tokens: int, costs: CostConfig) -> float:
    """USD for `trained_tokens` (OpenAI bills tokens x epochs) of fine-tuning `base_model`."""
    prices = costs.openai_training_per_1m_tokens
    if base_model not in prices:
        raise UnknownPriceError(f"no OpenAI training price for {base_model!r} in "
                                f"costs.openai_training_per_1m_tokens (known: {sorted(prices)})")
    return trained_tokens / 1_000_000 * prices[base_model]

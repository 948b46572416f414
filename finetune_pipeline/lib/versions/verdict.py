"""The decision, written out: did fine-tuning pay off over prompting, on this data, by these measurements?

Pure: reads a ranked leaderboard (with its paired comparison of the best fine-tuned version against the best
prompting baseline) and says, in a few plain lines, which is better on the primary metric and how sure that
is, what fine-tuning cost in forgetting, what each costs to run (latency, tokens, USD per 1,000 requests) and
what the fine-tune cost to make, with the number of requests after which it has paid for itself.
"""

from __future__ import annotations

from finetune_pipeline.lib.reporting.markdown import fmt
from finetune_pipeline.lib.versions.leaderboard import Leaderboard, LeaderboardRow


def _score(row: LeaderboardRow, metric: str) -> str:
    value, ci = row.metrics.get(metric), row.intervals.get(metric)
    text = fmt(value, 3) if isinstance(value, (int, float)) else "n/a"
    return f"{text} [{ci.low:.3f}, {ci.high:.3f}]" if ci is not None else text


def verdict(board: Leaderboard, confidence: float) -> list[str]:
    metric = board.primary_metric
    tuned, prompted = board.best_of(fine_tuned=True), board.best_of(fine_tuned=False)
    if tuned is None or prompted is None:
        missing = "fine-tuned version" if tuned is None else "prompting baseline"
        return [f"No verdict yet: no {missing} is evaluated on eval set {board.eval_set}."]
    lines = [_quality(board, tuned, prompted, metric, confidence)]
    if (forgetting := _forgetting(tuned)) is not None:
        lines.append(forgetting)
    lines.append(_running_cost(tuned, prompted))
    lines.append(_making_cost(tuned, prompted))
    return lines


def _quality(board: Leaderboard, tuned: LeaderboardRow, prompted: LeaderboardRow, metric: str,
             confidence: float) -> str:
    test = board.comparison
    head = (f"{metric}: fine-tuned {tuned.version} {_score(tuned, metric)} vs the best prompting baseline "
            f"{prompted.version} {_score(prompted, metric)}")
    if test is None:
        return f"{head}; no paired test (the two evals' rows could not be compared), so no verdict on quality."
    sure = f"{round(confidence * 100)}% confidence"
    stats = f"difference {test.difference:+.3f}, one-sided p = {test.p_value:.2g} ({test.method}, {test.n} rows)"
    if test.difference > 0 and test.p_value < 1 - confidence:
        return f"Fine-tuning paid off in quality: {head}; {stats}, better with {sure}."
    if test.difference < 0:
        return f"Fine-tuning did not pay off: prompting scores higher. {head}; {stats}."
    return f"Fine-tuning did not pay off with {sure}: {head}; {stats}: the difference is within the noise."


def _forgetting(tuned: LeaderboardRow) -> str | None:
    drift, delta = tuned.metrics.get("general/drift"), tuned.metrics.get("general/nll_delta")
    if drift is None:
        return f"Forgetting: not measured for {tuned.version} ({tuned.general_note or 'no general_eval'})."
    return (f"Forgetting: {tuned.version} drifts {_score(tuned, 'general/drift')} nats/token from its base model "
            f"on the general suite (the base's own answers became that much less likely), and its NLL of the "
            f"reference answers changed by {_score(tuned, 'general/nll_delta') if delta is not None else 'n/a'}; "
            "a prompting baseline changes no weights (drift 0).")


def _running_cost(tuned: LeaderboardRow, prompted: LeaderboardRow) -> str:
    def one(r: LeaderboardRow) -> str:
        return (f"{r.version}: p50 {fmt(r.latency_p50_s, 2)} s a request, {fmt(r.prompt_tokens, 0)} prompt tokens, "
                f"${fmt(r.usd_per_1k_requests, 4)} per 1,000 requests")
    return f"Cost to run: {one(tuned)}; {one(prompted)}."


def _making_cost(tuned: LeaderboardRow, prompted: LeaderboardRow) -> str:
    text = (f"Cost to make: training {tuned.version} took {fmt(tuned.train_seconds, 0)} s on {tuned.device}, "
            f"est. ${fmt(tuned.cost_usd, 4)}")
    saving = (prompted.usd_per_1k_requests or 0) - (tuned.usd_per_1k_requests or 0)
    if tuned.cost_usd is not None and tuned.usd_per_1k_requests is not None and \
            prompted.usd_per_1k_requests is not None:
        if saving > 0:
            text += (f"; it answers ${saving:.4f} per 1,000 requests cheaper, so it pays for its training after "
                     f"{tuned.cost_usd / saving * 1000:,.0f} requests")
        else:
            text += "; it is not cheaper to run, so its training is paid for by quality alone"
    return text + "."

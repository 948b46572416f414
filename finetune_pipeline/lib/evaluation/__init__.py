"""Evaluation: greedy and label-constrained generation, the backends that run a model (in process,
vLLM, any OpenAI-compatible server), the metrics (an extension point: metrics/), the typed eval report,
the confusion matrix, and the merged-model check."""

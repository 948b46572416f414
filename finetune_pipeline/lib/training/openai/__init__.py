"""OpenAI fine-tuning: OpenAI's format rules checked before any request, uploads and jobs that are never
paid for twice (the ledger), waiting with backoff while the job's events stream into the log."""

"""The core of finetune_pipeline: every stage as plain Python, with no Dagster import.

Packages, lowest first (a package imports only those below it; the tests check it):

    section.py   the base of every config section (strict pydantic), below every package
    storage/     content-addressed artifacts (a folder or a bucket), lineage, state files
    reporting/   markdown tables and PNG charts for metadata and reports
    data/        raw files, row formats, cleaning rules, splits, check-data
    models/      base models: resolving, loading (safetensors only), merging an adapter
    training/    the training engine (HF Trainer + PEFT), packing, launchers, pods, OpenAI jobs
    evaluation/  generation, constrained decoding, metrics, backends, eval reports
    versions/    model versions and their kinds, leaderboard, promotion, serving, retraining
    config/      the run config: every package's section in one typed, validated file
    stages/      one function per asset: its inputs, its recipe, its build
"""

from pathlib import Path

# The repository root: configs/ and data/ live here.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

"""The core's log records, in the Dagster run log of the step that produced them.

`finetune_pipeline.lib` logs with the standard `logging` module and knows
nothing of Dagster. Dagster can capture named Python loggers itself
(`python_logs.managed_python_loggers` in dagster.yaml), but only where the
instance is configured so; this handler makes the records reach the run log
(and the UI) on any instance, the CLI's and the tests' included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

CORE_LOGGER = "finetune_pipeline"


class _ToDagster(logging.Handler):
    def __init__(self, log: dg.DagsterLogManager):
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        level = {logging.WARNING: "warning", logging.ERROR: "error", logging.CRITICAL: "critical"}
        getattr(self.log, level.get(record.levelno, "info"))(self.format(record))


@contextmanager
def core_logs(context: dg.OpExecutionContext | dg.AssetCheckExecutionContext) -> Iterator[None]:
    """While the body runs, the core's INFO-and-up records go to this step's log."""
    logger = logging.getLogger(CORE_LOGGER)
    handler, level = _ToDagster(context.log), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)

"""Recipe sweeps: a few train settings tried side by side, the winner chosen on validation data only.

config.py is the `sweep:` section, points.py expands it into named TrainConfigs,
selection.py picks the winner from the points' validation results. Training,
merging and recording are stages (lib/stages/sweep.py); this package loads
nothing and never sees the test split.
"""

from finetune_pipeline.lib.sweeps.config import SweepConfig
from finetune_pipeline.lib.sweeps.points import SweepPoint, expand
from finetune_pipeline.lib.sweeps.selection import PointResult, SweepSelection, select

__all__ = ["SweepConfig", "SweepPoint", "expand", "PointResult", "SweepSelection", "select"]

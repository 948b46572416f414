"""Every asset check of the code location, in one list: Definitions registers them, promotion reads which block."""

import dagster as dg

from finetune_pipeline.defs import data, training

ASSET_CHECKS = [data.rows_accounted_for, data.no_input_shared_between_splits, data.min_train_rows,
                data.recommended_train_rows, training.merged_matches_base_plus_adapter]


def blocking_check_keys(asset: dg.AssetKey) -> list[dg.AssetCheckKey]:
    """The blocking checks of `asset`: a failed one stops what follows, and a version made by it is not promoted."""
    return [spec.key for checks in ASSET_CHECKS for spec in checks.check_specs
            if spec.asset_key == asset and spec.blocking]

"""`base`: a base model as it is, the prompting baseline. It costs no training."""

from __future__ import annotations

from finetune_pipeline.lib.versions.kinds.kind import LocalWeightsKind


class BaseKind(LocalWeightsKind):
    name = "base"

    def base_version(self, version):
        return version.key  # its own base: forgetting is 0 by definition


KIND = BaseKind()


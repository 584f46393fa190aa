"""Know the cost before and during training: PRE, the pre-training energy estimator, and its validation.

`python -m repro.estimate [-m] <repro.train overrides>` estimates every job of a request before
anything trains; `python -m repro.estimate validate` writes the validation tables to
paper/estimation/. STEP, the projection during training, lives in `repro.energy.projection`.
"""

from repro.estimate.features import FEATURES, GPU_SPEC_KEYS, published_runs
from repro.estimate.model import Estimator, fit

__all__ = ["FEATURES", "GPU_SPEC_KEYS", "Estimator", "fit", "published_runs"]

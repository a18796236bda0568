"""Optuna studies over CustomSAC's (or SB3 SAC's) learning rates, tau and target entropy; see ``tuning.study``."""

from tuning.objective import Objective, TrialSettings
from tuning.report import export_results
from tuning.space import SearchSpace, TuningError, load_space
from tuning.storage import StudyStorage, mask_url
from tuning.study import tune

__all__ = [
    "Objective",
    "SearchSpace",
    "StudyStorage",
    "TrialSettings",
    "TuningError",
    "export_results",
    "load_space",
    "mask_url",
    "tune",
]

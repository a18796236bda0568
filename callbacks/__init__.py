"""SB3 callbacks, usable with any SB3 algorithm (SB3's own as well as CustomSAC): annotated episode videos, exactly
resumable checkpoints, a timed evaluation, normalisation statistics kept on disk, hyperparameters for TensorBoard.

Importing this package changes nothing: the rendering back-ends are chosen (see :func:`headless_rendering`) only when
an env is made for a video, and only where the user has not chosen them.
"""

from callbacks.checkpoint import ResumableCheckpointCallback
from callbacks.evaluation import TimedEvalCallback
from callbacks.hparams import HParamCallback
from callbacks.normalize import SaveNormalizeCallback
from callbacks.overlay import annotate_frame, overlay_layout, record_episode
from callbacks.video import AnnotatedVideoCallback, headless_rendering, write_video

__all__ = [
    "AnnotatedVideoCallback",
    "HParamCallback",
    "ResumableCheckpointCallback",
    "SaveNormalizeCallback",
    "TimedEvalCallback",
    "annotate_frame",
    "headless_rendering",
    "overlay_layout",
    "record_episode",
    "write_video",
]

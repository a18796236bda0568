"""SB3 callbacks shared by the scripts: annotated episode videos and atomic, exactly resumable checkpoints.

They only use the public Stable-Baselines3 API, so they work with SB3's own algorithms as well as with CustomSAC.
"""

from callbacks.checkpoint import (
    CheckpointCallback,
    CheckpointError,
    find_checkpoints,
    load_checkpoint,
    resume_latest,
    save_checkpoint,
    trim_monitor_csv,
)
from callbacks.overlay import annotate_frame, overlay_layout, record_episode
from callbacks.video import AnnotatedVideoCallback, write_video

__all__ = [
    "AnnotatedVideoCallback",
    "CheckpointCallback",
    "CheckpointError",
    "annotate_frame",
    "find_checkpoints",
    "load_checkpoint",
    "overlay_layout",
    "record_episode",
    "resume_latest",
    "save_checkpoint",
    "trim_monitor_csv",
    "write_video",
]

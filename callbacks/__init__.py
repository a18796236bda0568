"""SB3 callbacks shared by the scripts: annotated episode videos and atomic, exactly resumable checkpoints.

They only use the public Stable-Baselines3 API, so they work with SB3's own algorithms as well as with CustomSAC.
"""

import os

# Rendering classic-control envs to rgb_array initialises pygame's display, which on a headless machine prints a
# misleading "error: XDG_RUNTIME_DIR is invalid"; off-screen recording never needs a real display.
# MuJoCo needs an offscreen GL backend there: EGL (Mesa's libEGL renders in software, with no display or GPU);
# PyOpenGL must load the same platform. Set MUJOCO_GL=osmesa (or glfw with a display) to choose another.
if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

from callbacks.checkpoint import CheckpointCallback, CheckpointError, find_checkpoints, save_checkpoint
from callbacks.overlay import annotate_frame, overlay_layout, record_episode
from callbacks.resume import load_checkpoint, resume_latest, trim_monitor_csv
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

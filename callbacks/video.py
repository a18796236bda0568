"""Annotated episode videos during training: ``videos/<step>.mp4`` + ``.gif`` and a TensorBoard video summary."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import GifImagePlugin, Image
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from callbacks.overlay import record_episode

__all__ = ["AnnotatedVideoCallback", "append_gif_frame", "headless_rendering", "log_image", "write_video"]


def headless_rendering() -> None:
    """
    On a machine without a display, choose the off-screen rendering back-ends that the user has not chosen: call it
    before making an env with ``render_mode="rgb_array"`` (and before MuJoCo or PyOpenGL are first imported).

    - ``SDL_VIDEODRIVER=dummy``: classic-control envs render through pygame, whose display would otherwise print a
      misleading "XDG_RUNTIME_DIR is invalid" and needs no real screen for ``rgb_array``;
    - ``MUJOCO_GL=egl`` and ``PYOPENGL_PLATFORM`` the same: Mesa's libEGL renders with no display or GPU, and PyOpenGL
      must load the platform MuJoCo uses. Set ``MUJOCO_GL=osmesa`` (or ``glfw`` with a display) to choose another.
    """
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def _even_size(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Pad frames by one edge pixel where needed: H.264 with yuv420p needs an even width and height."""
    h, w = frames[0].shape[:2]
    pad_h, pad_w = h % 2, w % 2
    if not (pad_h or pad_w):
        return list(frames)
    return [np.pad(f, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge") for f in frames]


def write_video(
    frames: Sequence[np.ndarray], path_without_ext: str | os.PathLike[str], fps: int = 30
) -> tuple[Path, Path]:
    """
    Write frames as ``<path>.mp4`` (H.264 through the ffmpeg that imageio-ffmpeg ships) and ``<path>.gif``.

    :param frames: RGB uint8 frames, all of the same shape (H, W, 3)
    :param path_without_ext: output path without extension; parent folders are created
    :param fps: frames per second of both files
    :return: (mp4 path, gif path)
    """
    # Imported here: moviepy is slow to import and only needed when a video is actually written.
    from moviepy import ImageSequenceClip

    if len(frames) == 0:
        raise ValueError(f"write_video got no frames for {path_without_ext}")
    shapes = {np.asarray(f).shape for f in frames}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
        raise ValueError(f"write_video needs RGB frames of one shape (H, W, 3), got shapes {sorted(shapes)}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    base = Path(path_without_ext)
    base.parent.mkdir(parents=True, exist_ok=True)
    mp4_path, gif_path = base.with_name(base.name + ".mp4"), base.with_name(base.name + ".gif")
    frames = [np.asarray(f, dtype=np.uint8) for f in _even_size(frames)]
    clip = ImageSequenceClip(frames, fps=fps)  # holds the list, and hands ffmpeg one frame at a time
    try:
        # yuv420p: the pixel format every player (and browsers) can decode.
        clip.write_videofile(str(mp4_path), fps=fps, codec="libx264", audio=False, logger=None, pixel_format="yuv420p")
    finally:
        clip.close()
    _write_gif(frames, gif_path, fps)
    _release_freed_memory()
    return mp4_path, gif_path


def _write_gif(frames: Sequence[np.ndarray], path: Path, fps: int) -> None:
    """
    The GIF with Pillow, fed one frame at a time: Pillow keeps each frame only as its 8-bit palette image (a third
    of the RGB frame). moviepy's ``write_gif`` goes through imageio's Pillow plugin, which first holds an RGB copy
    of every frame: for a 200-frame Pendulum episode, 250 MiB against 60.
    """
    images = (Image.fromarray(frame) for frame in frames)
    first = next(images)
    first.save(path, save_all=True, append_images=images, duration=1000 / fps, loop=0)


def append_gif_frame(path: str | os.PathLike[str], frame: np.ndarray, fps: float) -> None:
    """
    Add one frame at the end of an animated GIF, creating the file for the first: for animations that grow one frame
    at a time over hours (training landscapes), where writing the whole file again each time would cost more with
    every frame. The frame has its own palette (a GIF's local colour table), so frames of different colours keep
    their own; the first frame's size is the animation's.

    :param path: the GIF
    :param frame: an RGB uint8 frame (H, W, 3), the size of the file's first
    :param fps: frames per second (the delay after this frame)
    """
    image = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    path = Path(path)
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "wb" if new else "r+b") as f:
        if new:
            header, _ = GifImagePlugin.getheader(image, info={"loop": 0, "duration": 1000 / fps})
            f.write(b"".join(header))
        else:
            f.seek(-1, os.SEEK_END)  # the trailer byte: the frame goes over it, and a new trailer after it
            if f.read(1) != b";":
                raise ValueError(f"{path} does not end like a GIF; remove it to start a new animation")
            f.seek(-1, os.SEEK_END)
        f.write(b"".join(GifImagePlugin.getdata(image, duration=1000 / fps, include_color_table=True)) + b";")


def _release_freed_memory() -> None:
    """
    Give the freed frames back to the system. A frame (0.75 MB) starts above glibc's mmap threshold, but glibc
    raises that threshold each time such a block is freed, so later frames come from the heap and their pages stay
    with the process after it frees them: without this a run held ~880 MiB between videos instead of ~410.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def log_image(logger: Logger, tag: str, encoded: bytes, height: int, width: int, step: int) -> None:
    """
    Write an encoded image (PNG, or an animated GIF, which TensorBoard shows as a video) to the TensorBoard writer of
    ``logger`` at ``step``, at once; nothing when the logger has no TensorBoard output.

    :param logger: an SB3 logger (the model's)
    :param tag: TensorBoard tag
    :param encoded: the file's bytes
    :param height: image height in pixels
    :param width: image width in pixels
    :param step: the global step
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded)
    for fmt in logger.output_formats:
        if isinstance(fmt, TensorBoardOutputFormat):
            fmt.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
            fmt.writer.flush()


class AnnotatedVideoCallback(BaseCallback):
    """
    Every ``video_freq`` environment steps, play ``n_episodes`` full episodes with the current policy in a separate
    env and save them annotated (training step, episode step, reward, return, action, live reward strip).

    Files: ``<video_folder>/<num_timesteps>.mp4`` and ``.gif`` (episodes are concatenated). TensorBoard: the clip
    under ``tag`` at step ``num_timesteps``, when the model's logger has a TensorBoard output.

    Why not ``logger.record(tag, Video(...))``: torch's ``add_video`` imports ``moviepy.editor``, which moviepy 2
    removed, so it silently writes an empty summary. We write the same summary (an animated GIF image, which is
    what ``add_video`` produces) directly from the GIF we already encoded, to the logger's own TensorBoard writer.

    The recording env is separate from the training env, so recording does not disturb training episodes. It uses
    its own RNG (seeded from ``seed`` and the step), but ``model.predict`` with ``deterministic=False`` draws from
    the global torch RNG, so stochastic recordings change the training run's random stream (deterministic ones don't).

    A recording that fails (no GL backend for a MuJoCo render, no ffmpeg, ...) is reported in one line and stops
    the videos of this run; training goes on.

    :param env_id_or_factory: a gymnasium env id (made with ``render_mode="rgb_array"``) or a zero-argument
        callable returning a single env created with ``render_mode="rgb_array"``, or a VecEnv of one such env built
        like the training env (its ``VecNormalize`` statistics are copied from the training env at each recording)
    :param video_freq: record every ``video_freq`` environment steps (counted with ``num_timesteps``)
    :param video_folder: where to write the files (e.g. ``<run_dir>/videos``)
    :param n_episodes: episodes per recording
    :param deterministic: use the deterministic policy
    :param fps: frames per second of the files
    :param tag: TensorBoard tag
    :param seed: base seed of the recording env's resets (None: unseeded)
    :param record_on_end: also record at the end of training when the last recording is older than ``video_freq``
    :param env_kwargs: extra keyword arguments for ``gym.make`` when an env id is given
    :param verbose: 1 prints the written paths
    """

    def __init__(
        self,
        env_id_or_factory: str | Callable[[], gym.Env],
        video_freq: int,
        video_folder: str | os.PathLike[str],
        n_episodes: int = 1,
        deterministic: bool = True,
        fps: int = 30,
        tag: str = "trajectory/video",
        seed: int | None = 0,
        record_on_end: bool = False,
        env_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if video_freq <= 0:
            raise ValueError(f"video_freq must be a positive number of steps, got {video_freq}")
        if n_episodes <= 0:
            raise ValueError(f"n_episodes must be positive, got {n_episodes}")
        if not (isinstance(env_id_or_factory, str) or callable(env_id_or_factory)):
            raise TypeError(f"env_id_or_factory must be an env id or a callable, got {type(env_id_or_factory)}")
        self.env_id_or_factory = env_id_or_factory
        self.video_freq = video_freq
        self.video_folder = Path(video_folder)
        self.n_episodes = n_episodes
        self.deterministic = deterministic
        self.fps = fps
        self.tag = tag
        self.seed = seed
        self.record_on_end = record_on_end
        self.env_kwargs = env_kwargs or {}
        self.video_env: gym.Env | VecEnv | None = None
        self.failure: str | None = None
        self.last_paths: tuple[Path, Path] | None = None
        self._last_recorded = -1
        self._next_record = video_freq

    def _make_env(self) -> gym.Env | VecEnv:
        headless_rendering()
        if isinstance(self.env_id_or_factory, str):
            return gym.make(self.env_id_or_factory, render_mode="rgb_array", **self.env_kwargs)
        env = self.env_id_or_factory()
        render_mode = env.get_attr("render_mode")[0] if isinstance(env, VecEnv) else getattr(env, "render_mode", None)
        if render_mode != "rgb_array":
            raise ValueError(
                "The env factory of AnnotatedVideoCallback must create the env with render_mode='rgb_array', "
                f"got render_mode={getattr(env, 'render_mode', None)!r}"
            )
        return env

    def _init_callback(self) -> None:
        # Resumed runs: the next recording is the next multiple of video_freq, not video_freq steps from now.
        self._next_record = (self.model.num_timesteps // self.video_freq + 1) * self.video_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next_record:
            self._next_record = (self.num_timesteps // self.video_freq + 1) * self.video_freq
            self._record_or_report()
        return True

    def _record_or_report(self) -> None:
        """Record, or say in one line why no video can be made; a video never stops training."""
        if self.failure is not None:
            return
        try:
            self.record()
        except Exception as e:  # any render or encoder failure: the run matters more than its video
            self.failure = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            print(f"warning: no video at step {self.num_timesteps} ({self.failure}); training goes on without videos")

    def _on_training_end(self) -> None:
        if self.record_on_end and self.num_timesteps - max(self._last_recorded, 0) >= self.video_freq:
            self._record_or_report()
        if self.video_env is not None:
            self.video_env.close()
            self.video_env = None

    def record(self) -> tuple[Path, Path]:
        """
        Record now: play the episodes, write the files, log to TensorBoard.

        :return: (mp4 path, gif path)
        """
        if self.video_env is None:
            self.video_env = self._make_env()
        if isinstance(self.video_env, VecEnv):
            sync_envs_normalization(self.training_env, self.video_env)
        step = int(self.num_timesteps)
        frames: list[np.ndarray] = []
        for i in range(self.n_episodes):
            # Seeded per recording so the same step always shows the same start states.
            seed = None if self.seed is None else self.seed + step + i
            ep_frames, _ = record_episode(self.model, self.video_env, self.deterministic, train_step=step, seed=seed)
            frames.extend(ep_frames)
        mp4_path, gif_path = write_video(frames, self.video_folder / str(step), fps=self.fps)
        log_image(self.logger, self.tag, gif_path.read_bytes(), frames[0].shape[0], frames[0].shape[1], step)
        self._last_recorded = step
        self.last_paths = (mp4_path, gif_path)
        if self.verbose >= 1:
            print(f"Annotated video at step {step}: {mp4_path} ({len(frames)} frames)")
        return mp4_path, gif_path

"""Per-frame annotation of rendered episodes: a text box on the frame and a live reward strip below it.

Everything here is pure (arrays in, arrays out) so that the training callback, ``scripts/evaluate.py --video`` and the
comparison script draw exactly the same picture. Only Pillow is used (no ImageMagick); the font is Pillow's scalable
default font, sized from the frame width so that the text stays readable from 200 px up to Pendulum's 500 px renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from stable_baselines3.common.vec_env import VecEnv

__all__ = ["OverlayLayout", "annotate_frame", "format_action", "overlay_layout", "record_episode"]

# Four text lines: training step, episode step, reward / return, action.
_N_LINES = 4
_BOX_ALPHA = 160  # translucent: the scene stays visible under the text
_MAX_ACTION_DIMS = 6  # longer actions are cut with an ellipsis so the line never runs off the frame


@dataclass(frozen=True)
class OverlayLayout:
    """
    Geometry of the annotation for a given raw frame size.

    :param font_size: pixel size of the text
    :param line_height: vertical distance between two text lines
    :param box: (x0, y0, x1, y1) of the translucent text box on the raw frame; pixels outside it are never changed
    :param strip_height: height of the reward strip appended below the frame (chosen so the total height is even,
        which H.264 needs)
    """

    font_size: int
    line_height: int
    box: tuple[int, int, int, int]
    strip_height: int


def overlay_layout(height: int, width: int) -> OverlayLayout:
    """
    Compute where :func:`annotate_frame` draws for a raw frame of ``height`` x ``width`` pixels.

    :param height: raw frame height
    :param width: raw frame width
    :return: the layout (text box on the frame, strip height below it)
    """
    if height < 16 or width < 32:
        raise ValueError(f"Frame of {height}x{width} pixels is too small to annotate (need at least 16x32)")
    font_size = max(8, width // 30)
    line_height = font_size + max(2, font_size // 4)
    margin = max(2, width // 100)
    box_height = min(height, _N_LINES * line_height + 2 * margin)
    box = (0, 0, width, box_height)
    strip_height = max(32, height // 5)
    strip_height += (height + strip_height) % 2
    return OverlayLayout(font_size=font_size, line_height=line_height, box=box, strip_height=strip_height)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        # Pillow >= 10.1 ships a scalable default font (needs FreeType).
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # pragma: no cover - old Pillow or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def format_action(action: Any) -> str:
    """
    Format an action compactly for the overlay: integers as is, floats with a sign and two decimals.

    :param action: scalar or array-like action
    :return: a short string such as ``[+0.52, -1.00]`` or ``3``
    """
    arr = np.asarray(action)
    if arr.ndim == 0:
        return str(arr.item()) if np.issubdtype(arr.dtype, np.integer) else f"{float(arr):+.2f}"
    flat = arr.ravel()
    if np.issubdtype(flat.dtype, np.integer):
        items = [str(int(v)) for v in flat[:_MAX_ACTION_DIMS]]
    else:
        items = [f"{float(v):+.2f}" for v in flat[:_MAX_ACTION_DIMS]]
    if flat.size > _MAX_ACTION_DIMS:
        items.append("...")
    return "[" + ", ".join(items) + "]"


def _draw_strip(width: int, height: int, rewards: Sequence[float], max_steps: int | None, font_size: int) -> np.ndarray:
    """Plot the rewards seen so far over the whole episode's time axis, so the curve grows frame by frame."""
    img = Image.new("RGB", (width, height), (24, 24, 32))
    draw = ImageDraw.Draw(img)
    font = _font(max(8, font_size * 3 // 4))
    pad = max(3, height // 10)
    x0, x1 = pad, width - pad - 1
    y0, y1 = pad + font_size, height - pad - 1  # leave room for the label line at the top
    draw.rectangle((x0, y0, x1, y1), outline=(80, 80, 96))
    values = np.asarray(rewards, dtype=np.float64).ravel()
    n = values.size
    draw.text((x0, 1), f"reward per step  ({n} steps)", fill=(200, 200, 210), font=font)
    if n == 0:
        return np.asarray(img)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-8:  # a flat line still needs a non-zero range to be placed
        lo, hi = lo - 1.0, hi + 1.0
    # The x axis spans the full episode length when it is known so that the strip fills up as time passes.
    span = max((max_steps or n) - 1, n - 1, 1)
    xs = x0 + (x1 - x0) * np.arange(n) / span
    ys = y1 - (y1 - y0) * (values - lo) / (hi - lo)
    if lo < 0.0 < hi:
        zero_y = y1 - (y1 - y0) * (0.0 - lo) / (hi - lo)
        draw.line((x0, zero_y, x1, zero_y), fill=(70, 70, 80))
    if n > 1:
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(90, 200, 255), width=2)
    r = max(2, height // 30)
    draw.ellipse((xs[-1] - r, ys[-1] - r, xs[-1] + r, ys[-1] + r), fill=(255, 170, 60))
    label = f"min {lo:.2f}  max {hi:.2f}"
    label_w = draw.textlength(label, font=font)
    draw.text((x1 - label_w, 1), label, fill=(200, 200, 210), font=font)
    return np.asarray(img)


def annotate_frame(
    frame: np.ndarray,
    *,
    train_step: int | None,
    episode_step: int,
    max_steps: int | None,
    reward: float,
    episode_return: float,
    action: Any,
    rewards_so_far: Sequence[float],
) -> np.ndarray:
    """
    Draw the step, reward, return and action on a rendered frame and append a live reward strip below it.

    The raw frame is left untouched except inside the translucent text box at its top (``overlay_layout(...).box``),
    which lets tests and users compare against the raw render.

    :param frame: RGB frame of shape (H, W, 3), dtype uint8 (as returned by ``env.render()`` in "rgb_array" mode)
    :param train_step: the model's training step (``num_timesteps``), or None when not training
    :param episode_step: 1-based step within the episode
    :param max_steps: episode time limit, or None when unknown
    :param reward: reward received for this step
    :param episode_return: return so far, this step included
    :param action: action taken at this step
    :param rewards_so_far: rewards of this episode up to and including this step (drawn in the strip)
    :return: a new RGB uint8 array of shape (H + strip_height, W, 3)
    """
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"annotate_frame expects an RGB frame of shape (H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"annotate_frame expects a uint8 frame, got dtype {arr.dtype}")
    height, width = arr.shape[:2]
    layout = overlay_layout(height, width)
    font = _font(layout.font_size)

    # Alpha-composite only the box region so the rest of the frame stays bit-identical to the raw render.
    x0, y0, x1, y1 = layout.box
    base = Image.fromarray(np.ascontiguousarray(arr[y0:y1, x0:x1])).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, _BOX_ALPHA))
    draw = ImageDraw.Draw(layer)
    steps = f"{episode_step}/{max_steps}" if max_steps else f"{episode_step}"
    lines = [
        f"train step {train_step:,}" if train_step is not None else "train step -",
        f"episode step {steps}",
        f"reward {float(reward):+.3f}   return {float(episode_return):+.2f}",
        f"action {format_action(action)}",
    ]
    margin = (layout.box[3] - _N_LINES * layout.line_height) // 2
    for i, text in enumerate(lines):
        draw.text((margin + 2, margin + i * layout.line_height), text, fill=(255, 255, 255, 255), font=font)
    box = np.asarray(Image.alpha_composite(base, layer).convert("RGB"))

    out = np.empty((height + layout.strip_height, width, 3), dtype=np.uint8)
    out[:height] = arr
    out[y0:y1, x0:x1] = box
    out[height:] = _draw_strip(width, layout.strip_height, rewards_so_far, max_steps, layout.font_size)
    return out


def _max_episode_steps(env: Any) -> int | None:
    """Find the episode time limit from the spec or a TimeLimit wrapper, if any."""
    if env.spec is not None and env.spec.max_episode_steps is not None:
        return int(env.spec.max_episode_steps)
    layer: Any = env
    while isinstance(layer, gym.Wrapper):
        if isinstance(layer, gym.wrappers.TimeLimit):
            return int(layer._max_episode_steps)
        layer = layer.env
    return None


class _OneVecEnv:
    """A VecEnv of one env played like a gymnasium env: the policy sees the VecEnv's observations (normalised,
    stacked), the frames are the env's renders, the rewards are what the VecEnv returns (a frozen ``VecNormalize``
    returns the env's own)."""

    def __init__(self, venv: VecEnv):
        if venv.num_envs != 1:
            raise ValueError(f"record_episode plays one env, got a VecEnv of {venv.num_envs}")
        self.venv = venv
        self.render_mode = venv.get_attr("render_mode")[0]
        self.spec = venv.get_attr("spec")[0]

    def reset(self, seed: int | None = None) -> tuple[Any, dict]:
        if seed is not None:
            self.venv.seed(seed)
        return self.venv.reset(), {}

    def render(self) -> np.ndarray:
        return self.venv.env_method("render")[0]

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        obs, rewards, dones, infos = self.venv.step(action)
        truncated = bool(infos[0].get("TimeLimit.truncated", False))
        return obs, float(rewards[0]), bool(dones[0]) and not truncated, truncated, infos[0]


def record_episode(
    model: Any,
    env: gym.Env | VecEnv,
    deterministic: bool = True,
    train_step: int | None = None,
    *,
    seed: int | None = None,
    annotate: bool = True,
    max_frames: int = 10_000,
) -> tuple[list[np.ndarray], list[float]]:
    """
    Play one full episode with ``model`` and return one frame per step.

    Each frame shows the state in which the action was chosen, annotated with that action and the reward it earned
    (Pendulum's reward is a function of that state and action), so an episode of T steps gives exactly T frames.

    :param model: any SB3 model (anything with ``predict(obs, deterministic=...)``); with a gymnasium ``env``, when
        the model trains on a ``VecNormalize`` env, its observation statistics are applied here too
    :param env: a single gymnasium env created with ``render_mode="rgb_array"``, or a VecEnv of one such env built
        like the training env (its own ``VecNormalize``, frozen, and ``VecFrameStack`` prepare the observations)
    :param deterministic: use the deterministic action (the mean for SAC)
    :param train_step: the training step to print on the frames (None when not training)
    :param seed: seed for ``env.reset`` (None continues the env's own RNG)
    :param annotate: False returns the raw renders (useful to compare)
    :param max_frames: safety cap for envs without a time limit
    :return: (frames, rewards) with ``len(frames) == len(rewards)`` == episode length
    """
    vec_normalize = model.get_vec_normalize_env() if hasattr(model, "get_vec_normalize_env") else None
    if isinstance(env, VecEnv):
        env, vec_normalize = _OneVecEnv(env), None  # type: ignore[assignment]
    render_mode = getattr(env, "render_mode", None)
    if render_mode != "rgb_array":
        raise ValueError(f"record_episode needs an env created with render_mode='rgb_array', got {render_mode!r}")
    max_steps = _max_episode_steps(env)
    frames: list[np.ndarray] = []
    rewards: list[float] = []
    obs, _ = env.reset(seed=seed)
    done = False
    while not done and len(frames) < max_frames:
        raw = np.asarray(env.render())
        policy_obs = vec_normalize.normalize_obs(obs) if vec_normalize is not None else obs
        action, _ = model.predict(policy_obs, deterministic=deterministic)
        obs, reward, terminated, truncated, _ = env.step(action)
        done = bool(terminated or truncated)
        rewards.append(float(reward))
        if annotate:
            raw = annotate_frame(
                raw,
                train_step=train_step,
                episode_step=len(rewards),
                max_steps=max_steps,
                reward=float(reward),
                episode_return=float(np.sum(rewards)),
                action=np.reshape(action, -1),
                rewards_so_far=rewards,
            )
        frames.append(raw)
    return frames, rewards

"""
What a SAC-family model has learned, over a 2-D map of the state space: the critic's value, the policy's mean action
and its standard deviation, with an evaluation episode's path drawn on top.

Works with CustomSAC, SB3's SAC and sb3-contrib's TQC: it only uses what the three share, ``model.policy.actor``'s
``get_action_dist_params``, ``model.critic`` and the entropy coefficient (``log_ent_coef``, else ``ent_coef_tensor``).
The state maps are in :mod:`callbacks.state_maps`.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from matplotlib.axis import Axis
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullLocator
from PIL import Image
from sb3_contrib import TQC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, sync_envs_normalization, unwrap_vec_normalize

from callbacks.state_maps import StateMap, get_state_map
from callbacks.video import append_gif_frame, log_image

__all__ = ["Landscape", "LandscapeCallback", "compute_landscape", "draw_landscape", "entropy_coefficient", "soft_q"]

# Plain text, not matplotlib's mathtext: parsing it again for every figure took a quarter of the drawing time.
_ALPHA, _MU, _SIGMA = "\N{GREEK SMALL LETTER ALPHA}", "\N{GREEK SMALL LETTER MU}", "\N{GREEK SMALL LETTER SIGMA}"


@dataclass
class Landscape:
    """
    A model's values on a state map's grid; images of shape (len(ys), len(xs)), row ``i`` at ``ys[i]``.

    :param step: the model's ``num_timesteps``
    :param xs: grid values of the map's first variable
    :param ys: grid values of the second variable
    :param q: the critics' value of the mean action, ``min_i Q_i(s, tanh(mu(s)))`` (TQC: the mean of all quantiles)
    :param action: the mean action ``tanh(mu(s))`` in the env's units, dimension ``action_dim``
    :param std: the standard deviation of the Gaussian before the tanh (gSDE: its state-dependent one), same dimension
    :param ent_coef: the entropy coefficient alpha
    :param action_dim: which action dimension ``action`` and ``std`` show
    :param action_range: that dimension's (low, high) in the env's units
    :param trajectory: an evaluation episode's states on the map, (T, 2); ``None``: none
    """

    step: int
    xs: np.ndarray
    ys: np.ndarray
    q: np.ndarray
    action: np.ndarray
    std: np.ndarray
    ent_coef: float
    action_dim: int = 0
    action_range: tuple[float, float] = (-1.0, 1.0)
    trajectory: np.ndarray | None = None


def soft_q(model: BaseAlgorithm, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """
    The value the algorithm's actor loss climbs, for a batch: the minimum over the critics (TQC: the mean of all
    critics' quantiles).

    :param model: a CustomSAC, SAC or TQC model
    :param obs: observations as the policy takes them (normalised if the run normalises)
    :param actions: squashed actions in [-1, 1], as the replay buffer stores them
    :return: shape (batch,)
    """
    q = model.critic(obs, actions)
    if isinstance(q, tuple):  # SB3's ContinuousCritic: one (batch, 1) tensor per critic
        return th.cat(q, dim=1).min(dim=1).values
    if isinstance(model, TQC):  # (batch, n_critics, n_quantiles)
        return q.mean(dim=(1, 2))
    if q.dim() == 3 and q.shape[-1] == 1:  # CustomSAC's EnsembleCritic: (n_critics, batch, 1)
        return q.min(dim=0).values.squeeze(-1)
    raise TypeError(f"{type(model).__name__}'s critic returns a tensor of shape {tuple(q.shape)}; no landscape for it")


def entropy_coefficient(model: BaseAlgorithm) -> float:
    """The current entropy coefficient alpha: learned (``exp(log_ent_coef)``) or fixed (``ent_coef_tensor``)."""
    log_ent_coef = getattr(model, "log_ent_coef", None)
    if log_ent_coef is not None:
        return float(log_ent_coef.detach().exp().item())
    return float(model.ent_coef_tensor.item())


def compute_landscape(
    model: BaseAlgorithm, state_map: StateMap, resolution: int = 101, action_dim: int = 0, normalize: bool = True
) -> Landscape:
    """
    Evaluate ``model`` on the ``resolution`` x ``resolution`` grid of ``state_map``, in one batched forward pass.

    :param model: a CustomSAC, SAC or TQC model
    :param state_map: the map (see :mod:`callbacks.state_maps`)
    :param resolution: grid points per axis
    :param action_dim: the action dimension to show
    :param normalize: normalise the observations with the model's ``VecNormalize`` (when it has one), as its env does
    :return: the values on the grid (no trajectory)
    """
    xs, ys, points = state_map.grid(resolution)
    obs = state_map.to_obs(points)
    vec_normalize = model.get_vec_normalize_env() if normalize else None
    if vec_normalize is not None:
        obs = vec_normalize.normalize_obs(obs)
    policy = model.policy
    policy.set_training_mode(False)  # as predict() does: batch norm and dropout in inference mode
    obs_tensor, _ = policy.obs_to_tensor(obs)
    with th.no_grad():
        actor = policy.actor
        mean, log_std, extra = actor.get_action_dist_params(obs_tensor)
        if extra:  # gSDE: the std depends on the state through the latent features
            std = actor.action_dist.proba_distribution(mean, log_std, **extra).distribution.stddev
        else:
            std = log_std.exp()
        squashed = th.tanh(mean)
        q = soft_q(model, obs_tensor, squashed)
    action = policy.unscale_action(squashed.cpu().numpy())
    shape = (len(ys), len(xs))
    space = model.action_space
    return Landscape(
        step=int(model.num_timesteps),
        xs=xs,
        ys=ys,
        q=q.cpu().numpy().reshape(shape),
        action=action[:, action_dim].reshape(shape),
        std=std[:, action_dim].cpu().numpy().reshape(shape),
        ent_coef=entropy_coefficient(model),
        action_dim=action_dim,
        action_range=(float(space.low[action_dim]), float(space.high[action_dim])),
    )


def play_episode(model: BaseAlgorithm, env: VecEnv, seed: int | None = None, max_steps: int = 10_000) -> np.ndarray:
    """
    One deterministic episode of the first env of ``env``.

    :param model: the model that acts
    :param env: a VecEnv; when it has no ``VecNormalize`` of its own, the model's normalises the observations
    :param seed: seed of the reset (None: unseeded)
    :param max_steps: stop there if the episode has not ended (an env without a time limit)
    :return: the raw observations (before any normalisation) of every step, (T, *observation shape)
    """
    env_normalize = unwrap_vec_normalize(env)
    model_normalize = model.get_vec_normalize_env() if env_normalize is None else None
    if seed is not None:
        env.seed(seed)
    obs = env.reset()
    raw = []
    for _ in range(max_steps):
        raw.append((env_normalize.get_original_obs() if env_normalize is not None else obs)[0])
        policy_obs = model_normalize.normalize_obs(obs) if model_normalize is not None else obs
        action, _ = model.predict(policy_obs, deterministic=True)
        obs, _, dones, _ = env.step(action)
        if dones[0]:
            break
    return np.asarray(raw)


def _break_wraps(points: np.ndarray, x_span: float) -> tuple[np.ndarray, np.ndarray]:
    """The path's x and y with a gap where x jumps by more than half the map (an angle wrapping from π to -π)."""
    x, y = points[:, 0].astype(float), points[:, 1].astype(float)
    jumps = np.flatnonzero(np.abs(np.diff(x)) > x_span / 2) + 1
    return np.insert(x, jumps, np.nan), np.insert(y, jumps, np.nan)


def _log_ticks(axis: Axis) -> None:
    """Ticks at 1, 2, 3, 5 and 7 times the powers of ten, plain numbers, no minor ticks: readable on a range under a
    decade, and quick (matplotlib's default log ticks and their labels took a third of the drawing time)."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FormatStrFormatter("%.3g"))


def draw_landscape(
    landscape: Landscape, state_map: StateMap, ent_coefs: list[tuple[int, float]] | None = None, title: str = ""
) -> Figure:
    """
    Four panels: the value, the mean action, the std and the entropy coefficient over training.

    :param landscape: what to draw
    :param state_map: the map it was computed on (axis labels)
    :param ent_coefs: (step, alpha) of each landscape so far; ``None``: this landscape's only
    :param title: first line of the figure's title (e.g. the algorithm and env)
    :return: a matplotlib figure (not pyplot's: nothing global to close)
    """
    fig = Figure(figsize=(9.6, 7.2))
    # A fixed layout: matplotlib's constrained layout would measure every text twice and take most of the time.
    axes = fig.subplots(2, 2, gridspec_kw={"left": 0.08, "right": 0.97, "bottom": 0.07, "top": 0.9, "hspace": 0.35})
    extent = (*state_map.x_range, *state_map.y_range)
    low, high = landscape.action_range
    dim = f"[{landscape.action_dim}]" if landscape.action_dim else ""
    panels = [
        (landscape.q, f"value: min over critics of Q(s, tanh({_MU}(s)))", {"cmap": "viridis"}),
        (
            landscape.action,
            f"mean action tanh({_MU}(s)){dim}, in the env's units",
            {"cmap": "coolwarm", "vmin": low, "vmax": high},
        ),
        (landscape.std, f"std {_SIGMA}(s){dim} of the Gaussian before tanh", {"cmap": "magma", "norm": LogNorm()}),
    ]
    for ax, (values, panel_title, style) in zip(axes.flat, panels):
        image = ax.imshow(values, origin="lower", extent=extent, aspect="auto", interpolation="nearest", **style)
        colorbar = fig.colorbar(image, ax=ax)
        if "norm" in style:
            _log_ticks(colorbar.ax.yaxis)
        if landscape.trajectory is not None and len(landscape.trajectory):
            x, y = _break_wraps(landscape.trajectory, state_map.x_range[1] - state_map.x_range[0])
            ax.plot(x, y, color="white", linewidth=1.6)
            ax.plot(x, y, color="black", linewidth=0.7)
            ax.plot(x[0], y[0], "o", color="white", markeredgecolor="black", markersize=5)
        ax.set(xlabel=state_map.labels[0], ylabel=state_map.labels[1])
        ax.set_title(panel_title, fontsize=10, y=1.0)  # a fixed y: no measuring of the ticks to place it
    history = np.asarray(ent_coefs or [(landscape.step, landscape.ent_coef)], dtype=float)
    ax = axes[1, 1]
    ax.plot(history[:, 0], history[:, 1], marker="o", markersize=3)
    ax.set(xlabel="environment steps", yscale="log")
    _log_ticks(ax.yaxis)
    ax.set_title(f"entropy coefficient {_ALPHA}", fontsize=10, y=1.0)
    ax.grid(alpha=0.3)
    path = "; deterministic episode drawn (o = start)" if landscape.trajectory is not None else ""
    fig.suptitle(f"{title}{' ' if title else ''}step {landscape.step}, {_ALPHA} = {landscape.ent_coef:.3g}{path}")
    return fig


def png_bytes(fig: Figure, dpi: int) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _numbered_pngs(folder: Path) -> list[Path]:
    """``folder``'s ``<step>.png`` files in step order."""
    return sorted((p for p in folder.glob("*.png") if p.stem.isdigit()), key=lambda p: int(p.stem))


class LandscapeCallback(BaseCallback):
    """
    Every ``landscape_freq`` environment steps (and once before training), draw the model's landscape on a state
    map, with one deterministic episode of ``eval_env`` drawn on it.

    Files: ``<save_path>/<num_timesteps>.png``, and ``<save_path>.gif`` animating them, one frame added at each
    landscape. A resumed run starts the animation again from the PNGs up to its step.
    TensorBoard: the PNG under ``tag`` at step ``num_timesteps``, written straight to the logger's TensorBoard writer:
    a value given to ``logger.record`` waits for the next dump, which off-policy algorithms do only every
    ``log_interval`` episodes, so a landscape between two dumps would replace the one before.

    :param landscape_freq: draw every ``landscape_freq`` environment steps (counted with ``num_timesteps``)
    :param save_path: the folder of the PNGs (e.g. ``<run_dir>/landscapes``)
    :param state_map: a :class:`~callbacks.state_maps.StateMap`, or an env id with a registered map
    :param eval_env: the env of the drawn episode (its ``VecNormalize`` statistics are copied from the training env);
        ``None``: ``gym.make(state_map)`` when ``state_map`` is an env id, else no episode
    :param resolution: grid points per axis
    :param action_dim: the action dimension to show
    :param seed: seed of the episode's reset, the same at every landscape: the frames follow one start state
    :param fps: frames per second of the GIF
    :param dpi: resolution of the PNGs (the GIF's size grows with its square)
    :param title: first line of the figure's title
    :param tag: TensorBoard tag
    :param verbose: 1 prints the written paths
    """

    def __init__(
        self,
        landscape_freq: int,
        save_path: str | os.PathLike[str],
        state_map: StateMap | str,
        eval_env: VecEnv | None = None,
        resolution: int = 101,
        action_dim: int = 0,
        seed: int | None = 0,
        fps: float = 2.0,
        dpi: int = 72,
        title: str = "",
        tag: str = "landscape/figure",
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if landscape_freq <= 0:
            raise ValueError(f"landscape_freq must be a positive number of steps, got {landscape_freq}")
        if resolution < 2:
            raise ValueError(f"resolution must be at least 2, got {resolution}")
        self.landscape_freq = landscape_freq
        self.save_path = Path(save_path)
        self.gif_path = self.save_path.with_suffix(".gif")
        self.state_map = get_state_map(state_map) if isinstance(state_map, str) else state_map
        if eval_env is None and isinstance(state_map, str) and self.state_map.from_obs is not None:
            eval_env = DummyVecEnv([lambda: gym.make(state_map)])
        self.eval_env = eval_env
        self.resolution = resolution
        self.action_dim = action_dim
        self.seed = seed
        self.fps = fps
        self.dpi = dpi
        self.title = title
        self.tag = tag
        self.ent_coefs: list[tuple[int, float]] = []
        self.last: Landscape | None = None  # the newest landscape's numbers
        self.seconds = 0.0  # time spent drawing, for the run's summary
        self.count = 0
        self._next = landscape_freq

    def _init_callback(self) -> None:
        n_actions = int(np.prod(self.model.action_space.shape))
        if not 0 <= self.action_dim < n_actions:
            raise ValueError(f"action_dim {self.action_dim} is not one of the {n_actions} action dimensions")
        shape = self.state_map.obs_shape
        if shape != (expected := self.model.observation_space.shape):
            raise ValueError(f"the state map makes observations of shape {shape}; the model takes {expected}")
        self._next = (self.model.num_timesteps // self.landscape_freq + 1) * self.landscape_freq
        self._restart_gif()

    def _restart_gif(self) -> None:
        """
        Start the animation again from the PNGs up to the model's step: none for a new run; for a resumed one, those
        of the part it keeps (the later ones, of the part it trains again, are removed).
        """
        self.gif_path.unlink(missing_ok=True)
        for path in _numbered_pngs(self.save_path):
            if int(path.stem) > self.model.num_timesteps:
                path.unlink()
            else:
                append_gif_frame(self.gif_path, np.asarray(Image.open(path).convert("RGB")), self.fps)

    def _on_training_start(self) -> None:
        if self.model.num_timesteps == 0:  # the untrained model: the animation's first frame
            self.draw()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.landscape_freq + 1) * self.landscape_freq
            self.draw()
        return True

    def _on_training_end(self) -> None:
        if self.eval_env is not None:
            self.eval_env.close()
            self.eval_env = None

    def draw(self) -> Path:
        """
        Draw now: compute the landscape, play the episode, write the PNG and the GIF, log to TensorBoard.

        :return: the PNG's path
        """
        start = time.perf_counter()
        landscape = compute_landscape(self.model, self.state_map, self.resolution, self.action_dim)
        step = landscape.step
        if self.eval_env is not None and self.state_map.from_obs is not None:
            if unwrap_vec_normalize(self.eval_env) is not None:
                sync_envs_normalization(self.training_env, self.eval_env)
            landscape.trajectory = self.state_map.from_obs(play_episode(self.model, self.eval_env, self.seed))
        self.ent_coefs = [*(p for p in self.ent_coefs if p[0] < step), (step, landscape.ent_coef)]
        self.last = landscape
        data = png_bytes(draw_landscape(landscape, self.state_map, self.ent_coefs, self.title), self.dpi)
        self.save_path.mkdir(parents=True, exist_ok=True)
        png = self.save_path / f"{step}.png"
        png.write_bytes(data)
        frame = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        append_gif_frame(self.gif_path, frame, self.fps)
        log_image(self.logger, self.tag, data, frame.shape[0], frame.shape[1], step)
        self.seconds += time.perf_counter() - start
        self.count += 1
        if self.verbose >= 1:
            print(f"Landscape at step {step}: {png}")
        return png

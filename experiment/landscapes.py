"""
Value, policy and entropy landscapes (:mod:`callbacks.landscape`) in the runner: the ``landscape_freq`` key checked
before a run starts, the run's callback, its share of the run's time, and the landscape of a saved model.
"""

import json
import math
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from callbacks.landscape import LandscapeCallback, compute_landscape, draw_landscape, play_episode, png_bytes
from callbacks.state_maps import NoStateMapError, get_state_map
from experiment.config import ALGOS, ConfigError
from experiment.envs import make_env
from experiment.evaluation import find_model, model_stats, run_env_spec
from experiment.zoo import EnvSpec
from saving.safe_zip import load_model

# This project's own key beside the zoo's (configs/sac.yml): env steps between two landscapes, 0 for none.
LANDSCAPE_KEY = "landscape_freq"


def check_landscapes(env_id: str, hyperparams: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` when the run asks for landscapes that cannot be drawn."""
    freq = hyperparams.get(LANDSCAPE_KEY) or 0
    number = isinstance(freq, (int, float)) and not isinstance(freq, bool) and math.isfinite(freq)
    if not number or freq < 0 or freq != int(freq):
        raise ConfigError(
            f"landscape_freq must be an integer >= 0 (env steps between two landscapes; 0: none), got {freq!r}"
        )
    if freq <= 0:
        return
    try:
        get_state_map(env_id)
    except NoStateMapError as e:
        raise ConfigError(f"--landscape-freq {freq}: {e}; or pass --landscape-freq 0") from None
    if hyperparams.get("frame_stack"):
        raise ConfigError("--landscape-freq: a state map makes single observations, not stacked frames; pass 0")


def landscape_callbacks(
    spec: EnvSpec, hyperparams: dict[str, Any], run_dir: Path, train_env: VecEnv, seed: int
) -> list[BaseCallback]:
    """
    The run's landscape callback, when ``landscape_freq`` is set: ``<run_dir>/landscapes/<step>.png`` and
    ``<run_dir>/landscapes.gif``, with one deterministic episode of an evaluation env built like the training env.
    """
    freq = int(hyperparams.get(LANDSCAPE_KEY) or 0)
    if freq <= 0:
        return []
    shape = get_state_map(spec.env_id).obs_shape
    if shape != train_env.observation_space.shape:  # an env_wrapper that changes the observations, say
        raise ConfigError(
            f"--landscape-freq: {spec.env_id}'s state map makes observations of shape {shape}, but this run's env "
            f"gives {train_env.observation_space.shape}; pass --landscape-freq 0"
        )
    eval_env = make_env(spec, evaluation=True, stats=train_env)
    return [LandscapeCallback(freq, run_dir / "landscapes", spec.env_id, eval_env, seed=seed, title=f"{run_dir.name}:")]


def report_landscapes(run_dir: Path, callbacks: list[BaseCallback], wall_time: float) -> None:
    """Add the landscapes' time and share of the run's wall time to ``summary.json``, and print them."""
    drawn = [c for c in callbacks if isinstance(c, LandscapeCallback)]
    if not drawn:
        return
    seconds, count = sum(c.seconds for c in drawn), sum(c.count for c in drawn)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary.update(landscapes=count, landscape_time_s=seconds, landscape_share=seconds / max(wall_time, 1e-9))
    summary_path.write_text(json.dumps(summary, indent=2))
    print(
        f"{count} landscapes in {seconds:.1f} s ({100 * summary['landscape_share']:.1f}% of the run): "
        f"{drawn[0].gif_path} and {drawn[0].save_path}/"
    )


def draw_saved_landscape(
    path: str | Path,
    output: Path | None = None,
    env_id: str | None = None,
    device: str = "auto",
    seed: int = 0,
    resolution: int = 101,
    trust_files: bool = False,
) -> Path:
    """
    The landscape of a saved model, with one deterministic episode drawn on it (``scripts/plot.py --landscape``).

    :param path: a run folder (its ``best_model.zip``, else the final model) or a model zip
    :param output: the PNG (default: ``landscape.png`` in the run folder, or beside the zip)
    :param env_id: the env, for a zip outside a run folder
    :param device: torch device
    :param seed: seed of the episode
    :param resolution: grid points per axis
    :param trust_files: the files may run code: unpickle what the zip cannot be opened without, import the modules
        its run folder names (``--trust-files``)
    :return: the PNG's path
    """
    algo, env_id, model_path, run_dir = find_model(path, env_id)
    try:
        state_map = get_state_map(env_id)
    except NoStateMapError as e:
        raise ConfigError(str(e)) from None
    spec = run_env_spec(run_dir, trust_files) if run_dir is not None else EnvSpec(env_id)
    env = make_env(spec, evaluation=True, stats=model_stats(model_path, run_dir, env_id))
    model = load_model(model_path, ALGOS[algo], env, device=device, trust_pickle=trust_files)
    landscape = compute_landscape(model, state_map, resolution)
    if state_map.from_obs is not None:
        landscape.trajectory = state_map.from_obs(play_episode(model, env, seed))
    env.close()
    figure = draw_landscape(landscape, state_map, title=f"{algo} {model_path.name} on {env_id}:")
    output = output or (run_dir or model_path.parent) / "landscape.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(png_bytes(figure, dpi=100))
    return output

"""Evaluation after training: finding a run's model, its env and statistics, and playing episodes with it."""

import json
import zipfile
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from experiment.config import ALGOS, ConfigError, read_yaml_mapping
from experiment.envs import import_gym_packages, make_env
from experiment.names import check_names, check_trusted
from experiment.zoo import EnvSpec, env_spec
from saving.normalize import normalize_stats_path

# The policy module recorded in a model zip tells which algorithm saved it.
_POLICY_MODULES = {
    "custom_sac.policies": "custom",
    "stable_baselines3.sac.policies": "sb3",
    "sb3_contrib.tqc.policies": "tqc",
    "sb3_contrib.crossq.policies": "crossq",
}


def algo_of_zip(path: Path) -> str:
    """Which of :data:`ALGOS` saved the model zip at ``path``."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
        module = data["policy_class"]["__module__"]
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        raise ConfigError(f"{path} is not an SB3 model zip; pass a run folder or a .zip saved by train.py") from None
    if module not in _POLICY_MODULES:
        raise ConfigError(f"{path} holds a model of {module}, which is none of {', '.join(ALGOS)}")
    return _POLICY_MODULES[module]


def read_run_args(run_dir: Path) -> dict[str, Any]:
    """The ``args.yml`` a run folder holds (algo, env_id, seed, ...)."""
    return read_yaml_mapping(run_dir / "args.yml", what="run settings")


def run_env_spec(run_dir: Path, trust: bool = False) -> EnvSpec:
    """
    The env a run folder trained on, from its ``config.yml`` and ``args.yml``.

    :param run_dir: the run folder, perhaps from elsewhere
    :param trust: import the modules its files name even outside :data:`experiment.names.TRUSTED_PACKAGES`
    :raises UserError: it names such modules and ``trust`` is False (nothing is imported then)
    """
    args = read_run_args(run_dir)
    hyperparams = read_yaml_mapping(run_dir / "config.yml", what="run config")
    gym_packages = args.get("gym_packages") or []
    gym_packages = [gym_packages] if isinstance(gym_packages, str) else list(gym_packages)
    check_trusted(hyperparams, gym_packages, str(run_dir), trust)
    import_gym_packages(gym_packages)
    check_names(hyperparams)
    return env_spec(args["env_id"], hyperparams, args.get("vec_env", "dummy"))


def model_stats(model_path: Path, run_dir: Path | None, env_id: str) -> Path | None:
    """The ``VecNormalize`` statistics that go with a model of a run folder: ``best_model.zip``'s own, else the
    final ones; ``None`` when the run did not normalise."""
    if run_dir is None:
        return None
    best = normalize_stats_path(run_dir, env_id, best=True)
    if model_path.name == "best_model.zip" and best.is_file():
        return best
    final = normalize_stats_path(run_dir, env_id)
    return final if final.is_file() else None


def find_model(path: str | Path, env_id: str | None = None) -> tuple[str, str, Path, Path | None]:
    """
    Resolve a run folder or a model zip.

    :param path: a run folder (its ``best_model.zip``, else the final ``<env>.zip``) or a model zip
    :param env_id: the env, needed for a zip that does not sit in a run folder
    :return: (algo, env id, model path, run folder or None)
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "args.yml").is_file():
            raise ConfigError(f"{path} is not a run folder (no args.yml); pass logs/<algo>/<env>_<id> or a model zip")
        args = read_run_args(path)
        for candidate in (path / "best_model.zip", path / f"{args['env_id']}.zip"):
            if candidate.is_file():
                return args["algo"], args["env_id"], candidate, path
        raise ConfigError(f"no model in {path}: it has neither best_model.zip nor {args['env_id']}.zip")
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass a run folder or a model zip")
    algo = algo_of_zip(path)
    run_dir = path.parent if (path.parent / "args.yml").is_file() else None
    if env_id is None:
        if run_dir is None:
            raise ConfigError(f"{path} is not in a run folder: say which env it plays with --env")
        env_id = read_run_args(run_dir)["env_id"]
    return algo, env_id, path, run_dir


def evaluate(
    model: BaseAlgorithm,
    env: str | EnvSpec,
    episodes: int,
    deterministic: bool = True,
    seed: int | None = 0,
    stats: VecEnv | str | Path | None = None,
) -> tuple[list[float], list[int]]:
    """
    Returns and lengths of ``episodes`` episodes of ``model`` on a fresh, seeded env.

    :param model: the model to play
    :param env: an env id, or the run's :class:`~experiment.zoo.EnvSpec` (its wrappers, normalisation, stacking)
    :param episodes: number of episodes
    :param deterministic: use the deterministic action
    :param seed: seed of the env (None: unseeded)
    :param stats: the ``VecNormalize`` statistics to evaluate with, frozen (see :func:`experiment.envs.make_env`)
    """
    env = make_env(env, evaluation=True, stats=stats)
    if seed is not None:
        env.seed(seed)
    returns, lengths = evaluate_policy(
        model, env, n_eval_episodes=episodes, deterministic=deterministic, return_episode_rewards=True
    )
    env.close()
    return list(map(float, returns)), list(map(int, lengths))

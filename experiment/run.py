"""One training run, start to finish: resolve the config, make the run folder, train, evaluate, report."""

import dataclasses
import inspect
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from callbacks import AnnotatedVideoCallback, HParamCallback, SaveNormalizeCallback, TimedEvalCallback
from callbacks.checkpoint import ResumableCheckpointCallback
from experiment.config import ALGOS, DEFAULT_N_TIMESTEPS, load_hyperparams, model_kwargs, read_yaml_mapping, valid_keys
from experiment.envs import check_env_id, import_gym_packages, make_env
from experiment.errors import ConfigError
from experiment.evaluation import algo_of_zip, evaluate, read_run_args, run_env_spec
from experiment.folders import new_numbered_folder
from experiment.landscapes import check_landscapes, landscape_callbacks, report_landscapes
from experiment.plots import plot_runs
from experiment.summary import write_summary
from experiment.update_path import choose_compile_step, update_path
from experiment.zoo import EnvSpec, action_noise, check_run_keys, env_spec, zoo_callbacks
from saving.errors import UntrustedPickleError
from saving.normalize import normalize_stats_path, save_normalize_stats
from saving.resume import resume_latest, trim_monitor_csv
from saving.safe_zip import load_model


@dataclass
class TrainSettings:
    """Everything ``scripts/train.py`` takes; ``None`` means "from the config" or "the default"."""

    algo: str = "custom"
    env_id: str = "Pendulum-v1"
    n_timesteps: int | None = None
    seed: int | None = None
    config: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    log_folder: str = "logs"
    tensorboard_log: str | None = "logs/tensorboard"
    eval_freq: int = 1000
    eval_episodes: int = 5
    final_eval_episodes: int = 10
    save_freq: int = 5000
    video_freq: int = 10_000
    n_envs: int | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    vec_env: str = "dummy"
    gym_packages: list[str] = field(default_factory=list)
    device: str = "auto"
    compile_step: str = "auto"
    resume: str | None = None
    trust_files: bool = False  # --trust-files: the run folder or zip may run code (experiment.cli)
    progress: bool = True
    verbose: int = 1
    command: str = ""


@dataclass
class _Run:
    """A run resolved from its settings, before any env exists."""

    hyperparams: dict[str, Any]
    args: dict[str, Any]
    run_dir: Path
    spec: EnvSpec
    resume_dir: Path | None = None  # continue this run folder in place
    zip_model: BaseAlgorithm | None = None  # a new run from these weights (--resume model.zip)

    @property
    def n_envs(self) -> int:
        return self.hyperparams.get("n_envs", 1)


@dataclass
class RunResult:
    run_dir: Path
    model_path: Path
    mean_reward: float
    std_reward: float
    wall_time_s: float
    env_steps_per_s: float
    interrupted: bool
    files: list[Path]
    tensorboard_dir: str | None
    update_path: str


def check_device(device: str) -> None:
    if device.startswith("cuda") and not th.cuda.is_available():
        raise ConfigError("--device cuda but torch sees no CUDA GPU; use --device cpu (or auto)")
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")


def create_model(
    algo: str,
    env: VecEnv,
    hyperparams: dict[str, Any],
    *,
    seed: int | None,
    tensorboard_log: str | None = None,
    device: str = "auto",
    verbose: int = 0,
) -> BaseAlgorithm:
    """Build ``ALGOS[algo]`` from resolved hyperparameters (see :func:`experiment.config.load_hyperparams`)."""
    policy = hyperparams.get("policy", "MlpPolicy")
    kwargs = model_kwargs(hyperparams)
    noise = action_noise(hyperparams, int(np.prod(env.action_space.shape)))
    if noise is not None:
        kwargs["action_noise"] = noise
    try:
        return ALGOS[algo](
            policy, env, seed=seed, tensorboard_log=tensorboard_log, device=device, verbose=verbose, **kwargs
        )
    except (ValueError, TypeError, AssertionError) as e:  # a value the algorithm rejects
        raise ConfigError(f"--algo {algo} rejects the hyperparameters: {e}") from None


def _resolve_hyperparams(settings: TrainSettings) -> tuple[dict[str, Any], EnvSpec]:
    """The run's hyperparameters (config entry, then -params, -n, --n-envs and --env-kwargs) and the env they
    describe; every value checked."""
    import_gym_packages(settings.gym_packages)
    check_device(settings.device)
    overrides = dict(settings.overrides)
    if settings.n_timesteps is not None:
        overrides["n_timesteps"] = settings.n_timesteps
    if settings.n_envs is not None:
        overrides["n_envs"] = settings.n_envs
    if settings.env_kwargs:  # as in the zoo, --env-kwargs replaces the config's env_kwargs
        overrides["env_kwargs"] = dict(settings.env_kwargs)
    hyperparams = load_hyperparams(settings.algo, settings.env_id, settings.config, overrides)
    hyperparams.setdefault("n_timesteps", DEFAULT_N_TIMESTEPS)
    hyperparams.setdefault("policy", "MlpPolicy")
    spec = env_spec(settings.env_id, hyperparams, settings.vec_env)
    check_env_id(settings.env_id, spec.env_kwargs)
    check_run_keys(hyperparams)
    check_landscapes(settings.env_id, hyperparams)
    return hyperparams, spec


def _prepare_new_run(settings: TrainSettings) -> _Run:
    """Validate everything, then (and only then) create the run folder: bad input leaves no trace."""
    hyperparams, spec = _resolve_hyperparams(settings)
    seed = settings.seed if settings.seed is not None else random.randrange(2**31)
    args = {**asdict(settings), "seed": seed}
    run_dir = new_numbered_folder(Path(settings.log_folder) / settings.algo, settings.env_id)
    (run_dir / "config.yml").write_text(yaml.safe_dump(hyperparams, sort_keys=True))
    (run_dir / "args.yml").write_text(yaml.safe_dump(args, sort_keys=True))
    return _Run(hyperparams, args, run_dir, spec)


def _prepare_resume(settings: TrainSettings) -> _Run:
    """A run folder resumes in place from its newest checkpoint; a model zip starts a new run from its weights."""
    path = Path(settings.resume)  # type: ignore[arg-type]
    if path.is_dir():
        if not (path / "args.yml").is_file():
            raise ConfigError(f"--resume {path}: not a run folder (no args.yml); pass logs/<algo>/<env>_<id>")
        args = read_run_args(path)
        spec = run_env_spec(path, settings.trust_files)  # imports the run's --gym-packages
        hyperparams = read_yaml_mapping(path / "config.yml")
        if settings.n_timesteps is not None:
            hyperparams["n_timesteps"] = settings.n_timesteps
        return _Run(hyperparams, args, path, spec, resume_dir=path)
    if not path.is_file():
        raise ConfigError(f"--resume {path}: no such run folder or model zip")
    algo = algo_of_zip(path)
    if algo != settings.algo:
        raise ConfigError(f"--resume {path} holds a {algo} model; run with --algo {algo}")
    hyperparams, spec = _resolve_hyperparams(settings)
    seed = settings.seed if settings.seed is not None else random.randrange(2**31)
    model = _model_from_zip(settings, path, hyperparams, spec, seed)  # before the folder: a bad zip leaves none
    run = _prepare_new_run(dataclasses.replace(settings, seed=seed))
    run.zip_model = model
    return run


def _model_from_zip(
    settings: TrainSettings, path: Path, hyperparams: dict[str, Any], spec: EnvSpec, seed: int
) -> BaseAlgorithm:
    """
    The zoo's ``--trained-agent``: the zip's weights and optimizer states under the new run's hyperparameters
    (those ``config.yml`` records) and seed. Nothing in the zip is unpickled unless ``--trust-files``.
    """
    env = make_env(spec, hyperparams.get("n_envs", 1))
    # Every constructor argument as a new run from config.yml would have it (config.yml's value, else the algorithm's
    # default; never the zip's own): read off a model constructed but not set up.
    algo_class, kwargs = ALGOS[settings.algo], model_kwargs(hyperparams)
    try:
        fresh = algo_class(hyperparams.get("policy", "MlpPolicy"), env, _init_setup_model=False, **kwargs)
    except (ValueError, TypeError, AssertionError) as e:
        raise ConfigError(f"--algo {settings.algo} rejects the hyperparameters: {e}") from None
    keys = set(inspect.signature(algo_class.__init__).parameters) & valid_keys(settings.algo)
    kwargs = {key: getattr(fresh, key) for key in keys if hasattr(fresh, key)} | kwargs
    kwargs.update(policy_kwargs=fresh.policy_kwargs, seed=seed, verbose=settings.verbose)
    try:
        model = load_model(path, algo_class, env, device=settings.device, trust_pickle=settings.trust_files, **kwargs)
    except UntrustedPickleError:
        raise
    except (ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--resume {path} does not fit this run's hyperparameters: {first}") from None
    finally:
        env.close()
    return model


def _build_model(settings: TrainSettings, run: _Run, env: VecEnv, tb_root: str | None) -> BaseAlgorithm:
    """A fresh model, the newest checkpoint of the run folder, or the weights of ``--resume model.zip``."""
    algo_class = ALGOS[run.args["algo"]]
    if run.resume_dir is not None:
        model, checkpoint = resume_latest(
            run.run_dir, algo_class, env, device=settings.device, trust_pickle=settings.trust_files
        )
        model.tensorboard_log = tb_root
        for csv in run.run_dir.glob("*monitor.csv"):
            trim_monitor_csv(csv, model.num_timesteps // run.n_envs)
        print(f"resuming {run.run_dir} from {checkpoint} at step {model.num_timesteps}")
        return model
    if run.zip_model is not None:
        model = run.zip_model
        model.set_env(env)
        model.set_random_seed(run.args["seed"])  # the run's env and generators, as for a new model
        model.tensorboard_log = tb_root
        print(
            f"new run from the weights and optimizer states of {settings.resume} (its replay buffer is not in the zip)"
        )
        return model
    hyperparams = run.hyperparams
    compile_step = choose_compile_step(settings.compile_step, run.args["algo"], hyperparams)
    if compile_step is not None:
        hyperparams = {**hyperparams, "compile_step": compile_step}
    return create_model(
        run.args["algo"],
        env,
        hyperparams,
        seed=run.args["seed"],
        tensorboard_log=tb_root,
        device=settings.device,
        verbose=settings.verbose,
    )


def _callbacks(run: _Run, env: VecEnv, verbose: int) -> tuple[list[BaseCallback], VecEnv]:
    """The run's callbacks (hyperparameters, evaluation, checkpoints, videos, the config's own) and the eval env."""
    args, run_dir, n_envs = run.args, run.run_dir, run.n_envs
    eval_env = make_env(run.spec, evaluation=True, stats=env)
    eval_env.seed(args["seed"] + 1)
    on_new_best = None
    if run.spec.normalize is not None:  # best_model.zip's statistics, saved when it is
        on_new_best = SaveNormalizeCallback(normalize_stats_path(run_dir, run.spec.env_id, best=True))
    callbacks: list[BaseCallback] = [
        HParamCallback({"algo": args["algo"], "env_id": run.spec.env_id, "seed": args["seed"], **run.hyperparams}),
        TimedEvalCallback(
            eval_env,
            callback_on_new_best=on_new_best,
            eval_freq=max(args["eval_freq"] // n_envs, 1),
            n_eval_episodes=args["eval_episodes"],
            best_model_save_path=str(run_dir),
            log_path=str(run_dir),  # SB3 appends evaluations(.npz)
            deterministic=True,
            verbose=0,
            resume=run.resume_dir is not None,
        ),
    ]
    if args["save_freq"] > 0:
        callbacks.append(ResumableCheckpointCallback(args["save_freq"], run_dir, verbose=verbose))
    if args["video_freq"] > 0:

        def video_env() -> VecEnv:
            return make_env(run.spec, evaluation=True, render_mode="rgb_array", stats=env)

        callbacks.append(AnnotatedVideoCallback(video_env, args["video_freq"], run_dir / "videos", seed=args["seed"]))
    callbacks += landscape_callbacks(run.spec, run.hyperparams, run_dir, env, args["seed"])
    return callbacks + zoo_callbacks(run.hyperparams), eval_env


def _learn(model: BaseAlgorithm, run: _Run, callbacks: list[BaseCallback], progress: bool) -> tuple[bool, float, float]:
    """Train for the remaining steps; Ctrl-C stops early. Returns (interrupted, wall time, env steps per second)."""
    n_timesteps = run.hyperparams["n_timesteps"]
    remaining = n_timesteps - model.num_timesteps if run.resume_dir is not None else n_timesteps
    print(f"run folder: {run.run_dir}")
    print(
        f"training {run.args['algo']} on {run.spec.env_id} for {remaining} steps (seed {run.args['seed']}, "
        f"{run.n_envs} env(s), device {model.device})"
    )
    interrupted = False
    start_steps = model.num_timesteps if run.resume_dir is not None else 0  # a new run's learn() starts at 0
    start = time.perf_counter()
    try:
        model.learn(
            remaining,
            callback=callbacks,
            progress_bar=progress,
            tb_log_name=f"{run.args['algo']}_{run.run_dir.name.rsplit('_', 1)[1]}",
            reset_num_timesteps=run.resume_dir is None,  # from a zip: the zoo's reset, so learning_starts holds
        )
    except KeyboardInterrupt:
        interrupted = True
    wall_time = time.perf_counter() - start
    return interrupted, wall_time, (model.num_timesteps - start_steps) / max(wall_time, 1e-9)


def _save(model: BaseAlgorithm, run: _Run, interrupted: bool) -> Path:
    """The final model, and its VecNormalize statistics where the zoo keeps them."""
    model_path = run.run_dir / f"{run.spec.env_id}.zip"
    model.save(model_path)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        save_normalize_stats(vec_normalize, normalize_stats_path(run.run_dir, run.spec.env_id))
    if interrupted:
        print(f"\ninterrupted at step {model.num_timesteps}: the model so far is saved in {model_path}")
    return model_path


def train(settings: TrainSettings, extra_callbacks: list[BaseCallback] | None = None) -> RunResult:
    """
    Train one run and leave a complete run folder (see the README for its files).

    :param settings: the run's settings
    :param extra_callbacks: more SB3 callbacks (e.g. Optuna pruning)
    :return: where everything went and the final figures
    """
    if "CUSTOM_SAC_TORCH_THREADS" in os.environ:  # parallel runs on few cores: one thread each is fastest
        th.set_num_threads(int(os.environ["CUSTOM_SAC_TORCH_THREADS"]))
    run = _prepare_resume(settings) if settings.resume else _prepare_new_run(settings)
    algo, env_id, run_dir = run.args["algo"], run.spec.env_id, run.run_dir
    with open(run_dir / "command.txt", "a") as f:
        f.write(settings.command + "\n")

    env = make_env(run.spec, run.n_envs, monitor_dir=run_dir, append=run.resume_dir is not None)
    tb_root = run.args["tensorboard_log"] and str(Path(run.args["tensorboard_log"]) / env_id)
    model = _build_model(settings, run, env, tb_root)
    callbacks, eval_env = _callbacks(run, model.get_env(), settings.verbose)
    timing = _learn(model, run, callbacks + (extra_callbacks or []), settings.progress)
    model_path = _save(model, run, timing[0])

    seed = run.args["seed"]
    returns, _ = evaluate(model, run.spec, settings.final_eval_episodes, seed=seed + 2, stats=model.get_env())
    plot_runs([run_dir], [algo], f"{algo} on {env_id} ({run_dir.name})", run_dir / "rewards_plot.png")
    write_summary(run_dir, dict(algo=algo, env_id=env_id, seed=seed), model, returns, timing)
    report_landscapes(run_dir, callbacks, timing[1])
    env.close()
    eval_env.close()
    interrupted, wall_time, steps_per_s = timing
    mean, std = float(np.mean(returns)), float(np.std(returns))
    files, path = _files(run), update_path(model)
    return RunResult(run_dir, model_path, mean, std, wall_time, steps_per_s, interrupted, files, tb_root or None, path)


def _files(run: _Run) -> list[Path]:
    """The files a run folder holds, in the order train.py lists them."""
    run_dir, env_id = run.run_dir, run.spec.env_id
    files = [run_dir / f"{env_id}.zip", run_dir / "best_model.zip", run_dir / "evaluations.npz"]
    files += [run_dir / "rewards_plot.png", run_dir / "config.yml", *sorted(run_dir.glob("*monitor.csv"))]
    files += [run_dir / "summary.json", run_dir / "command.txt", normalize_stats_path(run_dir, env_id)]
    files += [normalize_stats_path(run_dir, env_id, best=True)]
    return [p for p in files if p.exists()]

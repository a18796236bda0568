"""
One trial of a study: sample hyperparameters, train with evaluations along the way, report them to Optuna so the
pruner can stop a hopeless trial early, and return a robust score.

The score is the mean of the last ``score_last`` evaluations, not the last one alone: a single evaluation of a few
episodes is noisy enough that the "best" trial of a study is often just a lucky draw. Every evaluation of every trial
starts from the same initial states (the evaluation env is reseeded with one seed each time), so trials are compared
on common ground rather than on who drew the easier episodes.
"""

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from experiment.config import validate
from experiment.envs import check_env_id
from experiment.envs import make_env as make_runner_env
from experiment.errors import first_line
from experiment.run import create_model
from tuning.space import SearchSpace, TuningError

# The evaluation env's seed is offset from the trial seeds so that evaluation episodes are not the training episodes
EVAL_SEED_OFFSET = 10_000
PRUNERS = ("median", "halving", "none")


@dataclass
class TrialSettings:
    """
    Everything a trial needs besides its sampled hyperparameters.

    :param algo: key of ``experiment.config.ALGOS``
    :param env_id: Gymnasium env id
    :param base_hyperparams: the env's resolved hyperparameters (configs/sac.yml); the space's fixed values and the
        sampled ones go on top
    :param space: the search space
    :param n_timesteps: training steps per trial
    :param n_evaluations: evaluations during a trial, evenly spaced; each is reported to the pruner
    :param eval_episodes: episodes per evaluation
    :param seed: base seed; trial ``k`` trains with ``seed + k``
    :param score_last: the score is the mean of the last ``score_last`` evaluations (``None``: ``min(3, K)``)
    :param max_episode_steps: shorten episodes (quick smoke runs); ``None`` keeps the env's limit
    """

    algo: str
    env_id: str
    base_hyperparams: dict[str, Any]
    space: SearchSpace
    n_timesteps: int
    n_evaluations: int = 10
    eval_episodes: int = 5
    seed: int = 0
    score_last: int | None = None
    max_episode_steps: int | None = None
    action_dim: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.n_timesteps <= 0 or self.n_evaluations <= 0 or self.eval_episodes <= 0:
            raise TuningError("-n, --n-evaluations and --eval-episodes must be positive")
        if self.n_evaluations > self.n_timesteps:
            raise TuningError(f"--n-evaluations {self.n_evaluations} exceeds the {self.n_timesteps} steps of a trial")
        if self.score_last is None:
            self.score_last = min(3, self.n_evaluations)
        env = make_env(self.env_id, max_episode_steps=self.max_episode_steps)
        self.action_dim = int(np.prod(env.action_space.shape))
        env.close()


class TrialEvalCallback(BaseCallback):
    """
    Evaluate every ``eval_freq`` steps, report to the trial, stop training when the pruner says so; also stop at the
    first non-finite training loss or action, since a diverged run only wastes the rest of its budget.

    :param trial: the Optuna trial
    :param eval_env: evaluation env, reseeded with ``eval_seed`` before each evaluation
    :param eval_freq: steps between evaluations
    :param eval_episodes: episodes per evaluation
    :param eval_seed: seed of every evaluation
    """

    def __init__(self, trial: optuna.Trial, eval_env: VecEnv, eval_freq: int, eval_episodes: int, eval_seed: int):
        super().__init__(verbose=0)
        self.trial = trial
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.eval_episodes = eval_episodes
        self.eval_seed = eval_seed
        self.evaluations: list[float] = []
        self.pruned = False
        self.diverged: str | None = None

    def _on_step(self) -> bool:
        # SB3 algorithms record their losses in the logger after each gradient phase; they stay there until dumped.
        for key, value in self.model.logger.name_to_value.items():
            if key.startswith("train/") and isinstance(value, float) and not math.isfinite(value):
                self.diverged = f"diverged: {key} is {value} at step {self.num_timesteps}"
                return False
        actions = self.locals.get("actions")
        if actions is not None and not np.all(np.isfinite(actions)):
            self.diverged = f"diverged: non-finite action at step {self.num_timesteps}"
            return False
        if self.n_calls % self.eval_freq == 0:
            return self._evaluate()
        return True

    def _evaluate(self) -> bool:
        self.eval_env.seed(self.eval_seed)  # common random numbers: the same start states for every evaluation
        mean_return, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.eval_episodes)
        if not math.isfinite(mean_return):
            self.diverged = f"diverged: evaluation return is {mean_return} at step {self.num_timesteps}"
            return False
        self.evaluations.append(float(mean_return))
        # Steps are counted in evaluations (1..K), so pruner warm-ups mean the same whatever the trial budget.
        self.trial.report(float(mean_return), step=len(self.evaluations))
        if self.trial.should_prune():
            self.pruned = True
            return False
        return True


def make_pruner(name: str, n_evaluations: int) -> optuna.pruners.BasePruner:
    """
    ``median``: prune a trial below the median of earlier trials at the same evaluation, after 5 trials and a
    warm-up of a third of the evaluations (early returns say little). ``halving``: asynchronous successive halving,
    rungs at evaluations 1, 3, 9, ... keeping the best third. ``none``: never prune.
    """
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, n_evaluations // 3))
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TuningError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


def make_env(env_id: str, max_episode_steps: int | None = None, n_envs: int = 1) -> VecEnv:
    """The trial's env (the runner's env factory), optionally with shortened episodes; the model seeds it."""
    check_env_id(env_id)
    return make_runner_env(
        env_id, n_envs, env_kwargs={"max_episode_steps": max_episode_steps} if max_episode_steps else None
    )


class Objective:
    """
    Callable for ``study.optimize``/ask-tell: one trial, returns the robust score (higher is better).

    Raises ``optuna.TrialPruned`` when pruned or diverged (``user_attrs["reason"]`` says which); other exceptions
    propagate with ``user_attrs["reason"]`` set, and the caller records the trial as failed.

    :param settings: the study's trial settings
    """

    def __init__(self, settings: TrialSettings):
        self.settings = settings

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.settings
        # A trial queued again after its worker died keeps the seed it was given (``tuning.workers``).
        seed = int(trial.user_attrs.get("seed", s.seed + trial.number))
        trial.set_user_attr("seed", seed)
        start = time.perf_counter()
        try:
            hyperparams = {**s.base_hyperparams, **s.space.sample(trial, s.action_dim)}
            hyperparams["n_timesteps"] = s.n_timesteps
            validate(s.algo, hyperparams)
            # Stored in full so that exporting the best trial needs nothing but the storage.
            trial.set_user_attr("hyperparams", hyperparams)
            value = self._train(trial, hyperparams, seed)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            trial.set_user_attr("reason", f"{type(e).__name__}: {first_line(e)}")
            raise
        finally:
            trial.set_user_attr("train_seconds", round(time.perf_counter() - start, 3))
        return value

    def _train(self, trial: optuna.Trial, hyperparams: dict[str, Any], seed: int) -> float:
        s = self.settings
        n_envs = int(hyperparams.get("n_envs", 1))
        env = make_env(s.env_id, max_episode_steps=s.max_episode_steps, n_envs=n_envs)
        eval_env = make_env(s.env_id, max_episode_steps=s.max_episode_steps)
        try:
            model = create_model(s.algo, env, hyperparams, seed=seed, device="cpu")
            # Evaluations evenly spaced over the budget, the last one at its end (n_calls counts vec-env steps).
            eval_freq = max(s.n_timesteps // (s.n_evaluations * n_envs), 1)
            callback = TrialEvalCallback(trial, eval_env, eval_freq, s.eval_episodes, s.seed + EVAL_SEED_OFFSET)
            try:
                model.learn(s.n_timesteps, callback=callback)
            except (ValueError, RuntimeError) as e:
                # NaN weights surface as a distribution error (e.g. "Expected parameter loc ... found invalid
                # values") before the callback sees a NaN loss: that is divergence too, not a crash.
                if "nan" not in str(e).lower() and "invalid values" not in str(e):
                    raise
                callback.diverged = f"diverged: {first_line(e)}"
        finally:
            env.close()
            eval_env.close()
        trial.set_user_attr("evaluations", callback.evaluations)
        if callback.diverged:
            trial.set_user_attr("reason", callback.diverged)
            raise optuna.TrialPruned(callback.diverged)
        if callback.pruned:
            trial.set_user_attr("reason", f"pruned after evaluation {len(callback.evaluations)}")
            raise optuna.TrialPruned(f"pruned after evaluation {len(callback.evaluations)}")
        if not callback.evaluations:
            raise TuningError("the trial finished without an evaluation")
        return float(np.mean(callback.evaluations[-s.score_last :]))


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Objective) -> FrozenTrial:
    """Run one asked trial and tell its outcome: COMPLETE, PRUNED (pruned or diverged) or FAIL (it raised)."""
    try:
        value = objective(trial)
    except optuna.TrialPruned:
        return study.tell(trial, state=TrialState.PRUNED)
    except (KeyboardInterrupt, SystemExit):
        trial.set_user_attr("reason", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as e:
        if "reason" not in trial.user_attrs:
            trial.set_user_attr("reason", f"{type(e).__name__}: {first_line(e)}")
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, value)


def trial_line(trial: FrozenTrial) -> str:
    """One line of progress: number, state, value, duration, parameters, and why it did not complete."""
    value = "" if trial.value is None else f" value={trial.value:.2f}"
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    reason = f" ({trial.user_attrs['reason']})" if "reason" in trial.user_attrs else ""
    return f"[pid {os.getpid()}] trial {trial.number} {trial.state.name}{value} in {seconds:.1f}s | {params}{reason}"

"""SB3's ``EvalCallback`` that also records the training wall-clock time of each evaluation, and resumes its log."""

import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import EvalCallback

__all__ = ["TimedEvalCallback"]


class TimedEvalCallback(EvalCallback):
    """
    SB3's ``EvalCallback`` that also stores, in ``evaluations.npz`` under ``wall_time``, the training seconds at each
    evaluation (time spent evaluating excluded, so curves against wall-clock compare training speed), and that
    continues an earlier ``evaluations.npz`` when a run is resumed.

    :param resume: load the existing log (entries up to the model's ``num_timesteps``) and append to it
    """

    def __init__(self, *args: Any, resume: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.resume = resume
        self.wall_times: list[float] = []
        self._start = 0.0
        self._eval_seconds = 0.0

    def _on_training_start(self) -> None:
        offset = 0.0
        log_file = Path(f"{self.log_path}.npz")
        if self.resume and self.log_path is not None and log_file.is_file():
            log = np.load(log_file)
            keep = log["timesteps"] <= self.model.num_timesteps
            self.evaluations_timesteps = log["timesteps"][keep].tolist()
            self.evaluations_results = log["results"][keep].tolist()
            self.evaluations_length = log["ep_lengths"][keep].tolist()
            if "wall_time" in log:
                self.wall_times = log["wall_time"][keep].tolist()
                offset = self.wall_times[-1] if self.wall_times else 0.0
            if self.evaluations_results:
                self.best_mean_reward = float(np.max(np.mean(self.evaluations_results, axis=1)))
        self._start = time.perf_counter() - offset

    def _on_step(self) -> bool:
        # The parent's own condition: with log_path None it evaluates but records nothing, so count evaluations here.
        evaluating = self.eval_freq > 0 and self.n_calls % self.eval_freq == 0
        started = time.perf_counter()
        continue_training = super()._on_step()
        if evaluating:
            self.wall_times.append(started - self._start - self._eval_seconds)
            self._eval_seconds += time.perf_counter() - started
            if self.log_path is not None:  # as SB3's EvalCallback: no log path, no file
                np.savez(
                    self.log_path,
                    timesteps=self.evaluations_timesteps,
                    results=self.evaluations_results,
                    ep_lengths=self.evaluations_length,
                    wall_time=self.wall_times,
                )
        return continue_training

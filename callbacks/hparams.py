"""The run's hyperparameters in TensorBoard's HParams tab."""

from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam

__all__ = ["HParamCallback"]


class HParamCallback(BaseCallback):
    """Write the run's hyperparameters to TensorBoard's HParams tab at the start of training."""

    def __init__(self, hyperparams: dict[str, Any]):
        super().__init__()
        self.hyperparams = hyperparams

    def _on_training_start(self) -> None:
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in self.hyperparams.items()}
        metrics = {"eval/mean_reward": 0.0, "rollout/ep_rew_mean": 0.0, "train/critic_loss": 0.0}
        self.logger.record("hparams", HParam(hparams, metrics), exclude=("stdout", "log", "json", "csv"))

    def _on_step(self) -> bool:
        return True

"""Keep a training env's ``VecNormalize`` statistics on disk as training goes (without pickle)."""

from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback

from saving.normalize import save_normalize_stats

__all__ = ["SaveNormalizeCallback"]


class SaveNormalizeCallback(BaseCallback):
    """
    Save the training env's ``VecNormalize`` statistics to ``path``; as ``EvalCallback``'s ``callback_on_new_best``,
    it keeps the statistics ``best_model.zip`` was evaluated with (the zoo's ``SaveVecNormalizeCallback``).
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)

    def _on_step(self) -> bool:
        vec_normalize = self.model.get_vec_normalize_env()
        if vec_normalize is not None:
            save_normalize_stats(vec_normalize, self.path)
        return True

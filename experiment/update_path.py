"""Which gradient step a run of CustomSAC takes: eager, or compiled by ``torch.compile`` where it pays.

Compiling the step costs about half a minute of CPU time at the second gradient step and then makes every step
faster (see the docs' speed page for the figures). ``--compile-step auto`` (the default of ``scripts/train.py``)
compiles when the run is long enough for that to pay back and the policy is the plain MLP the compiled step is
measured and tested on; ``on``, ``off`` and ``cudagraphs`` decide it outright.
"""

from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

COMPILE_SETTINGS = ("auto", "on", "off", "cudagraphs")
# Gradient steps after which the compiled step has paid back its compilation on a 2-core CPU, with margin
MIN_STEPS_TO_COMPILE = 5_000


def choose_compile_step(setting: str, algo: str, hyperparams: dict[str, Any]) -> bool | str | None:
    """
    The ``compile_step`` argument for a new model, or ``None`` to pass none (an algorithm other than CustomSAC,
    or a config that sets ``compile_step`` itself, which wins over the flag).

    :param setting: one of :data:`COMPILE_SETTINGS`
    :param algo: the ``--algo`` name
    :param hyperparams: the run's resolved hyperparameters (``n_timesteps``, ``learning_starts``, ``policy`` ...)
    """
    if algo != "custom" or "compile_step" in hyperparams:
        return None
    if setting != "auto":
        return {"on": True, "off": False, "cudagraphs": "cudagraphs"}[setting]
    train_freq, gradient_steps = hyperparams.get("train_freq", 1), hyperparams.get("gradient_steps", 1)
    per_env_step = gradient_steps / train_freq if isinstance(train_freq, int) and gradient_steps > 0 else 1
    steps = (hyperparams.get("n_timesteps", 0) - hyperparams.get("learning_starts", 100)) * per_env_step
    plain_mlp = hyperparams.get("policy", "MlpPolicy") == "MlpPolicy" and not hyperparams.get("use_sde", False)
    return plain_mlp and steps >= MIN_STEPS_TO_COMPILE


def update_path(model: BaseAlgorithm) -> str:
    """In words, the gradient step ``model`` takes (for the run's summary and the comparison's report)."""
    compile_step = getattr(model, "compile_step", None)
    if compile_step is None:
        return f"{type(model).__name__}.train (its own)"
    if compile_step == "cudagraphs":
        return "compiled, replayed as CUDA graphs"
    return "compiled (torch.compile)" if compile_step else "eager"

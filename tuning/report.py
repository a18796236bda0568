"""What a study leaves behind in ``<log folder>/optuna/<study>/``: trials.csv, best_hyperparams.yml and plots."""

import os
import shlex
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from experiment.errors import first_line
from tuning.objective import TrialSettings


def export_results(
    study: optuna.Study, out_dir: str | Path, settings: TrialSettings, retrain_timesteps: int | None
) -> dict[str, Path]:
    """
    Write ``trials.csv``, ``best_hyperparams.yml`` (when a trial completed) and the plots into ``out_dir``, from
    the full study (so workers and resumed runs refresh them rather than overwrite each other's results).

    :param study: the study
    :param out_dir: ``<log folder>/optuna/<study>/``
    :param settings: the trial settings (algo, env)
    :param retrain_timesteps: ``n_timesteps`` written into the YAML (the full training budget, not a trial's)
    :return: name -> path of the files written
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    frame = study.trials_dataframe(
        attrs=("number", "state", "value", "datetime_start", "duration", "params", "user_attrs")
    )
    frame = frame.drop(columns=[c for c in frame.columns if c == "user_attrs_hyperparams"])
    if "duration" in frame:
        frame["duration"] = pd.to_timedelta(frame["duration"]).dt.total_seconds()
    written["trials.csv"] = _atomic(out / "trials.csv", lambda p: frame.to_csv(p, index=False))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        best = study.best_trial
        hyperparams = dict(best.user_attrs["hyperparams"])
        hyperparams.pop("n_timesteps", None)
        if retrain_timesteps:
            hyperparams = {"n_timesteps": int(retrain_timesteps), **hyperparams}
        header = (
            f"# Best of study {study.study_name}: trial {best.number}, score {best.value:.3f} (mean of the last "
            f"evaluations)\n# {settings.algo} on {settings.env_id}; retrain with:\n"
            f"#   {retrain_command(settings.algo, settings.env_id, out / 'best_hyperparams.yml')}\n"
        )
        text = header + yaml.safe_dump(hyperparams, sort_keys=False, default_flow_style=False)
        written["best_hyperparams.yml"] = _atomic(out / "best_hyperparams.yml", lambda p: p.write_text(text))
        written.update(_plots(study, out))
    return written


def _plots(study: optuna.Study, out: Path) -> dict[str, Path]:
    from optuna.visualization import matplotlib as mpl_vis

    # PED-ANOVA (Optuna 5's default) needs no scikit-learn, unlike fANOVA (Optuna 4's default).
    with warnings.catch_warnings():  # "experimental" in Optuna 4
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        importances = {"evaluator": optuna.importance.PedAnovaImportanceEvaluator()}
    plots = {
        "optimization_history": ("plot_optimization_history", {}),
        "param_importances": ("plot_param_importances", importances),
        "parallel_coordinate": ("plot_parallel_coordinate", {}),
    }
    written: dict[str, Path] = {}
    for name, (function, kwargs) in plots.items():
        # A plot needs what the study may not have yet (importances need 2+ complete trials and 2+ params):
        # skip it with a note rather than fail the study.
        try:
            draw = lambda s=study, f=function, k=kwargs: getattr(mpl_vis, f)(s, **k)  # noqa: E731
            written[f"{name}.png"] = _png(draw, out / f"{name}.png")
        except Exception as e:
            print(f"note: skipped {name}.png: {first_line(e)}", file=sys.stderr)
        if optuna.visualization.is_available():  # plotly is present
            try:
                fig = getattr(optuna.visualization, function)(study, **kwargs)
                written[f"{name}.html"] = _atomic(out / f"{name}.html", lambda p, f=fig: f.write_html(str(p)))
            except Exception as e:
                print(f"note: skipped {name}.html: {first_line(e)}", file=sys.stderr)
    return written


def _png(plot: Callable[[], Any], path: Path) -> Path:
    """Save what one of Optuna's matplotlib functions draws. They draw with pyplot and set a style sheet: keep
    both to this call, so the caller's backend, style and open figures stay as they were."""
    import matplotlib
    import matplotlib.pyplot as plt

    figures = set(plt.get_fignums())
    try:
        with matplotlib.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # "experimental" since v2.2
            axes = plot()
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.set_size_inches(10, 6)
            return _atomic(path, lambda p: figure.savefig(p, format="png"))
    finally:
        for number in set(plt.get_fignums()) - figures:
            plt.close(number)


def retrain_command(algo: str, env_id: str, yaml_path: str | Path) -> str:
    """The command that trains with the exported hyperparameters."""
    return f"custom-sac-train --algo {algo} --env {env_id} --config {shlex.quote(str(yaml_path))}"


def _atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    # Write then rename: concurrent workers refreshing the same outputs never leave a half-written file.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
    return path

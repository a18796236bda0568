"""What every script shares: the one wrapper around main(), the user-error type, numbered output folders."""

import threading

import matplotlib
import matplotlib.pyplot as plt
import optuna
import pytest

from callbacks import CheckpointError
from experiment.cli import run_main
from experiment.config import ConfigError
from experiment.errors import UserError, first_line
from experiment.folders import new_numbered_folder
from tuning import TuningError
from tuning.report import _plots
from tuning.study import mask_url


def main_raising(error: BaseException):
    def main():
        raise error

    return main


@pytest.mark.parametrize("error", [ConfigError("bad -n"), TuningError("bad space"), CheckpointError("torn file")])
def test_user_errors_are_one_line_and_status_1(error, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_main(main_raising(error))
    assert exit_.value.code == 1 and capsys.readouterr().err == f"error: {error}\n"
    assert isinstance(error, UserError) or isinstance(error, CheckpointError)


def test_only_the_first_line_is_shown_and_it_can_be_redacted(capsys):
    with pytest.raises(SystemExit):
        run_main(main_raising(UserError("\n  postgresql://u:secret@h/db down\nmore")), redact=mask_url)
    assert capsys.readouterr().err == "error: postgresql://u:***@h/db down\n"
    assert first_line(RuntimeError()) == "RuntimeError"


def test_ctrl_c_is_one_line_and_status_130(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_main(main_raising(KeyboardInterrupt()), interrupted="interrupted: run it again to resume")
    assert exit_.value.code == 130 and capsys.readouterr().err == "interrupted: run it again to resume\n"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(ZeroDivisionError):
        run_main(main_raising(ZeroDivisionError("bug")))


def test_numbered_folders_count_up_and_never_reuse_an_id(tmp_path):
    (tmp_path / "Pendulum-v1_7").mkdir(parents=True)
    (tmp_path / "Pendulum-v1_x").mkdir()
    (tmp_path / "Pendulum-v1-other_9").mkdir()
    assert new_numbered_folder(tmp_path, "Pendulum-v1").name == "Pendulum-v1_8"
    assert new_numbered_folder(tmp_path / "new", "Pendulum-v1").name == "Pendulum-v1_1"
    made: list = []
    threads = [threading.Thread(target=lambda: made.append(new_numbered_folder(tmp_path, "Hop"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in made) == sorted(f"Hop_{i}" for i in range(1, 9))


def test_study_plots_leave_the_callers_matplotlib_alone(tmp_path):
    """Optuna draws with pyplot and sets a style sheet; the export keeps both to itself."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=4)
    mine = plt.figure()
    style = dict(dict.items(matplotlib.rcParams))
    written = _plots(study, tmp_path)
    assert {"optimization_history.png", "param_importances.png", "parallel_coordinate.png"} <= set(written)
    assert all(path.stat().st_size > 1000 for path in written.values())
    assert plt.get_fignums() == [mine.number] and dict(dict.items(matplotlib.rcParams)) == style
    plt.close(mine)

"""What every script shares: the one wrapper around main(), the user-error type, numbered output folders."""

import importlib
import pkgutil
import threading

import matplotlib
import matplotlib.pyplot as plt
import optuna
import pytest

import callbacks
import comparison
import experiment
import saving
import tuning
from comparison.data import CompareError
from experiment.cli import run_main
from experiment.config import ConfigError
from experiment.errors import UserError, first_line
from experiment.folders import new_numbered_folder
from saving import CheckpointError, UntrustedPickleError
from tuning import TuningError
from tuning.report import _plots
from tuning.study import mask_url


def main_raising(error: BaseException):
    def main():
        raise error

    return main


USER_ERRORS = [ConfigError, TuningError, CompareError, CheckpointError, UntrustedPickleError, UserError]


@pytest.mark.parametrize("error_type", USER_ERRORS)
def test_user_errors_are_one_line_and_status_1(error_type, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_main(main_raising(error_type("a problem\nand its details")))
    assert exit_.value.code == 1 and capsys.readouterr().err == "error: a problem\n"


def test_every_error_a_user_sees_is_a_user_error():
    """The wrapper catches one type: every exception class the project defines derives from it, except the two that
    never leave their module (each is caught where it is raised and told as a ConfigError, or skipped)."""
    rooms, defined = (saving, callbacks, experiment, tuning, comparison), set()
    for package in rooms:
        names = [m.name for m in pkgutil.iter_modules(package.__path__, f"{package.__name__}.")]
        for module in map(importlib.import_module, names):
            defined |= {o for o in vars(module).values() if isinstance(o, type) and issubclass(o, Exception)}
    ours = {e for e in defined if e.__module__.split(".")[0] in {room.__name__ for room in rooms}}
    assert set(USER_ERRORS) <= ours
    assert {e.__name__ for e in ours if not issubclass(e, UserError)} == {"RangeError", "Unencodable"}


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

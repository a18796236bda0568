"""
Tune CustomSAC (or SB3's SAC) with Optuna.

    custom-sac-tune --algo custom --env Pendulum-v1 --n-trials 50 -n 20000

One worker: the study lives in SQLite at logs/optuna/<study>.db and running the command again resumes it. Many
workers: start the same command on several processes or machines with ``--storage postgresql://user@host/db``
(password from PGPASSWORD or ~/.pgpass) or ``--storage logs/optuna/<study>.log`` (journal file, one machine);
``--n-trials`` is the study's total, shared by all workers. Outputs: logs/optuna/<study>/.
"""

import argparse
import sys

import optuna
import torch as th

from experiment.cli import ArgumentParser, run_main
from experiment.config import ALGOS
from experiment.errors import first_line
from tuning.objective import PRUNERS
from tuning.space import EXTRA_PARAMS, SAMPLERS, TuningError
from tuning.study import mask_url, tune


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True, choices=list(ALGOS), help="algorithm to tune")
    parser.add_argument("--env", default="Pendulum-v1", help="Gymnasium env id")
    parser.add_argument("--n-trials", type=int, default=100, help="the study's total number of trials (all workers)")
    parser.add_argument("--timeout", type=float, default=None, help="stop starting trials after SECONDS")
    parser.add_argument("-n", "--n-timesteps", type=int, default=None, help="training steps per trial")
    parser.add_argument("--n-evaluations", type=int, default=10, help="evaluations per trial (pruning points)")
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    parser.add_argument("--storage", default=None, help="database URL or .log journal path (default: SQLite)")
    parser.add_argument("--study-name", default=None, help="study name (default: <algo>_<env>); reuse to resume")
    parser.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    parser.add_argument("--pruner", default="median", choices=PRUNERS)
    parser.add_argument("--n-jobs", type=int, default=1, help="worker processes this command runs")
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        metavar="SECONDS",
        help="a running trial's heartbeat; one silent for 2x this is failed and run again",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampler seed; trial k trains with seed + k")
    parser.add_argument("-f", "--log-folder", default="logs", help="outputs go to LOG_FOLDER/optuna/<study>/")
    parser.add_argument("--space", default=None, help="search-space YAML (see tuning/space.py)")
    parser.add_argument("--separate-lrs", action="store_true", default=None, help="tune actor/critic/entropy rates")
    parser.add_argument("--extra", nargs="+", default=None, choices=list(EXTRA_PARAMS), help="also tune these")
    parser.add_argument("--config", default=None, help="hyperparameter YAML the trials start from")
    parser.add_argument("--max-episode-steps", type=int, default=None, help="shorten episodes (smoke runs)")
    return parser.parse_args(argv)


def _tune(argv: list[str] | None) -> None:
    args = parse_args(argv)
    th.set_num_threads(1)  # small MLPs: one thread is fastest, and parallel workers do not fight over cores
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our one line per trial replaces Optuna's
    try:
        _run_study(args, argv)
    except optuna.exceptions.OptunaError as e:  # e.g. a study created with another direction
        raise TuningError(first_line(e)) from e


def _run_study(args: argparse.Namespace, argv: list[str] | None) -> None:
    tune(
        args.algo,
        args.env,
        n_trials=args.n_trials,
        timeout=args.timeout,
        n_timesteps=args.n_timesteps,
        n_evaluations=args.n_evaluations,
        eval_episodes=args.eval_episodes,
        storage=args.storage,
        study_name=args.study_name,
        sampler=args.sampler,
        pruner=args.pruner,
        n_jobs=args.n_jobs,
        heartbeat_interval=args.heartbeat,
        seed=args.seed,
        log_folder=args.log_folder,
        space=args.space,
        separate_learning_rates=args.separate_lrs,
        extra=args.extra,
        config=args.config,
        max_episode_steps=args.max_episode_steps,
        argv=["python", *sys.argv] if argv is None else ["python", "-m", "tuning.command", *argv],
        log=lambda line: print(line, flush=True),
    )


def main(argv: list[str] | None = None) -> None:
    """The ``custom-sac-tune`` command (``scripts/tune.py``, ``python -m tuning.command``)."""
    run_main(
        lambda: _tune(argv),
        interrupted="interrupted: the running trial is recorded as FAIL; run the same command to resume",
        redact=lambda line: mask_url(line) if "://" in line else line,
    )


if __name__ == "__main__":
    main()

"""Compare algorithms over seeds and envs (CustomSAC against SB3's SAC by default) and write a report a person can
read.

    custom-sac-compare --env Pendulum-v1 --algos custom sb3 --seeds 5 -n 20000 --jobs 2
    custom-sac-compare --envs Pendulum-v1 LunarLanderContinuous-v3 --seeds 3 --jobs 2   # + the aggregate
    custom-sac-compare --runs logs/custom logs/sb3   # finished runs (of one env or several), no training

Writes logs/compare/<envs>_<id>/: report.md, summary.csv, runs.txt, curves.png (one env) or curves_<env>.png,
and with several envs the aggregate across them (rliable's IQM, probability of improvement and performance
profiles): aggregate.png and aggregate.csv.
"""

import argparse
import shlex
import sys
from collections.abc import Callable
from typing import TypeVar

from comparison.compare import compare
from comparison.data import CompareError
from experiment.cli import ArgumentParser, add_hyperparams_flag, positive_int, run_main

T = TypeVar("T")
# flag -> argparse attribute, for the options --runs cannot use
TRAINING_OPTIONS = {
    "--seeds": "seeds",
    "--seed-start": "seed_start",
    "-n": "n_timesteps",
    "--config": "config",
    "-params": "hyperparams",
    "--eval-freq": "eval_freq",
    "--eval-episodes": "eval_episodes",
    "--jobs": "jobs",
    "--device": "device",
}


def make_parser() -> ArgumentParser:
    """The command's flags; training flags share ``custom-sac-train``'s names."""
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", help="one Gymnasium env id (default: Pendulum-v1)")
    parser.add_argument(
        "--envs",
        nargs="+",
        metavar="ENV",
        help="several env ids: a section each, and the aggregate "
        "across them (with --runs: the envs to keep; default every env found)",
    )
    parser.add_argument("--algos", nargs="+", help="the first is compared with each other (default: custom sb3)")
    parser.add_argument("--seeds", type=int, help="seeds per algo and env, the same for every algo (default: 5)")
    parser.add_argument("--seed-start", type=int, help="first seed (default: 0)")
    parser.add_argument(
        "-n",
        "--n-timesteps",
        nargs="+",
        metavar="[ENV=]N",
        help="env steps per run: one number for every env, or ENV=N per env (default: the config's)",
    )
    parser.add_argument("--config", help="hyperparameter YAML for every algo (default: configs/sac.yml)")
    add_hyperparams_flag(parser, "override hyperparameters for every algo, e.g. -params batch_size:64")
    parser.add_argument("--eval-freq", type=positive_int, help="evaluate every N env steps (default: train.py's)")
    parser.add_argument("--eval-episodes", type=positive_int, help="episodes per evaluation (default: train.py's)")
    parser.add_argument("--jobs", type=positive_int, help="training processes at a time (default: 1)")
    parser.add_argument("-f", "--log-folder", default="logs", help="runs and logs/compare/ go here (default: logs)")
    parser.add_argument("--device", help="passed to train.py: auto, cpu or cuda")
    parser.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="compare finished run folders instead of training")
    parser.add_argument(
        "--threshold",
        nargs="+",
        metavar="[ENV=]RETURN",
        help="return counted as solved: one number for every env, or ENV=RETURN per env "
        "(default: -200 for Pendulum-v1, else the env's registered reward_threshold)",
    )
    parser.add_argument(
        "--score-range",
        nargs="+",
        default=[],
        metavar="ENV=LOW,HIGH",
        help="aggregate: the returns scored 0 and 1 on ENV, e.g. a random policy's and a reference "
        "return (default: min-max over the runs)",
    )
    parser.add_argument("--last-evals", type=positive_int, default=2, help="final return = last N evaluations")
    parser.add_argument("--bootstrap", type=positive_int, default=10_000, help="bootstrap resamples (default: 10000)")
    return parser


def parse_args(argv: list[str] | None = None) -> dict:
    """:func:`comparison.compare.compare`'s arguments from the command line (``argv``; ``None``: ``sys.argv[1:]``)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.runs:  # options that only shape training would be silently ignored: say so instead
        given = [flag for flag, value in TRAINING_OPTIONS.items() if getattr(args, value) not in (None, [])]
        if given:
            parser.error(f"{', '.join(given)}: training options, unused by --runs (which compares finished runs)")
    if args.env and args.envs:
        parser.error("--env and --envs: give one of them")
    return dict(
        envs=args.envs or args.env,
        algos=args.algos,
        seeds=5 if args.seeds is None else args.seeds,
        seed_start=args.seed_start or 0,
        n_timesteps=per_env(args.n_timesteps, "-n", positive_int),
        config=args.config,
        params=args.hyperparams,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        jobs=args.jobs or 1,
        log_folder=args.log_folder,
        runs=args.runs,
        threshold=per_env(args.threshold, "--threshold", float),
        score_ranges=dict(parse_score_range(text) for text in args.score_range),
        last_evals=args.last_evals,
        device=args.device,
        n_boot=args.bootstrap,
        command=shlex.join(["python", *sys.argv] if argv is None else ["python", "-m", "comparison.command", *argv]),
    )


def _number(text: str, flag: str, kind: Callable[[str], T] = float) -> T:
    try:
        return kind(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise CompareError(
            f"{flag}: expected a {'positive integer' if kind is positive_int else 'number'}, got {text!r}"
        ) from None


def per_env(items: list[str] | None, flag: str, kind: Callable[[str], T]) -> T | dict[str, T] | None:
    """A per-env option: one bare value (every env), or ``ENV=VALUE`` items."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        return _number(items[0], flag, kind)
    if any("=" not in item for item in items):
        raise CompareError(f"{flag}: one value for every env, or ENV=VALUE for each env, not a mix")
    return {env: _number(value, flag, kind) for env, value in (item.rsplit("=", 1) for item in items)}


def parse_score_range(text: str) -> tuple[str, tuple[float, float]]:
    """``--score-range ENV=LOW,HIGH``."""
    env, _, bounds = text.rpartition("=")
    low, _, high = bounds.partition(",")
    if not env or not high:
        raise CompareError(f"--score-range: expected ENV=LOW,HIGH, got {text!r}")
    low_value, high_value = _number(low, "--score-range"), _number(high, "--score-range")
    if not high_value > low_value:
        raise CompareError(f"--score-range {text}: the return scored 1 must be above the one scored 0")
    return env, (low_value, high_value)


def _compare(argv: list[str] | None) -> None:
    result = compare(**parse_args(argv))
    print(f"\ncomparison: {result.folder}")
    for env in result.envs.values():
        for verdict in env.verdicts:
            print(f"  {env.env_id}, learning, {verdict.candidate} vs {verdict.reference}: {verdict.learning}")
            print(f"  {env.env_id}, speed, {verdict.candidate} vs {verdict.reference}: {verdict.speed}")
    if result.aggregate is not None:
        for ref, text in zip(result.aggregate.improvement, result.aggregate.verdict):
            print(f"  aggregate over {len(result.envs)} envs, {result.algos[0]} vs {ref}: {text}")
    if result.failed:
        print(f"  {len(result.failed)} run(s) failed and are left out: see the end of report.md")
    for path in sorted(result.folder.glob("*.*")):
        print(f"  {path}")


def main(argv: list[str] | None = None) -> None:
    """The ``custom-sac-compare`` command (``scripts/compare.py``, ``python -m comparison.command``)."""
    run_main(lambda: _compare(argv))


if __name__ == "__main__":
    main()

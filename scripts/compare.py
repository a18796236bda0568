"""Compare algorithms over seeds (CustomSAC against SB3's SAC by default) and write a report a person can read.

    python scripts/compare.py --env Pendulum-v1 --algos custom sb3 --seeds 5 -n 20000 --jobs 2
    python scripts/compare.py --runs logs/custom/Pendulum-v1_* logs/sb3/Pendulum-v1_*   # finished runs, no training

Writes logs/compare/<env>_<id>/: curves.png, summary.csv, report.md, runs.txt.
"""

import argparse
import shlex
import sys

from experiment.cli import ArgumentParser, positive_int, run_main
from experiment.compare import compare

# flag -> argparse attribute, for the options --runs cannot use
TRAINING_OPTIONS = {
    "--seeds": "seeds", "--seed-start": "seed_start", "-n": "n_timesteps", "--config": "config",
    "-params": "hyperparams", "--eval-freq": "eval_freq", "--eval-episodes": "eval_episodes", "--jobs": "jobs",
    "--device": "device",
}  # fmt: skip


def parse_args() -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1", help="Gymnasium env id (with --runs: taken from the runs)")
    parser.add_argument("--algos", nargs="+", help="the first is compared with each other (default: custom sb3)")
    parser.add_argument("--seeds", type=int, help="seeds per algo, the same for every algo (default: 5)")
    parser.add_argument("--seed-start", type=int, help="first seed (default: 0)")
    parser.add_argument("-n", "--n-timesteps", type=positive_int, help="env steps per run (default: the config's)")
    parser.add_argument("--config", help="hyperparameter YAML for every algo (default: configs/sac.yml)")
    parser.add_argument("-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE",
                        help="override hyperparameters for every algo, e.g. -params batch_size:64")  # fmt: skip
    parser.add_argument("--eval-freq", type=positive_int, help="evaluate every N env steps (default: train.py's)")
    parser.add_argument("--eval-episodes", type=positive_int, help="episodes per evaluation (default: train.py's)")
    parser.add_argument("--jobs", type=positive_int, help="training processes at a time (default: 1)")
    parser.add_argument("-f", "--log-folder", default="logs", help="runs and logs/compare/ go here (default: logs)")
    parser.add_argument("--device", help="passed to train.py: auto, cpu or cuda")
    parser.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="compare finished run folders instead of training")
    parser.add_argument("--threshold", type=float, help="return counted as solved (default: -200 for Pendulum-v1)")
    parser.add_argument("--last-evals", type=positive_int, default=2, help="final return = last N evaluations")
    parser.add_argument("--bootstrap", type=positive_int, default=10_000, help="bootstrap resamples (default: 10000)")
    args = parser.parse_args()
    if args.runs:  # options that only shape training would be silently ignored: say so instead
        given = [flag for flag, value in TRAINING_OPTIONS.items() if getattr(args, value) not in (None, [])]
        if given:
            parser.error(f"{', '.join(given)}: training options, unused by --runs (which compares finished runs)")
    return dict(
        env_id=args.env,
        algos=args.algos,
        seeds=5 if args.seeds is None else args.seeds,
        seed_start=args.seed_start or 0,
        n_timesteps=args.n_timesteps,
        config=args.config,
        params=args.hyperparams,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        jobs=args.jobs or 1,
        log_folder=args.log_folder,
        runs=args.runs,
        threshold=args.threshold,
        last_evals=args.last_evals,
        device=args.device,
        n_boot=args.bootstrap,
        command=shlex.join(["python", *sys.argv]),
    )


def main() -> None:
    result = compare(**parse_args())
    print(f"\ncomparison: {result.folder}")
    for verdict in result.verdicts:
        print(f"  learning, {verdict.candidate} vs {verdict.reference}: {verdict.learning}")
        print(f"  speed, {verdict.candidate} vs {verdict.reference}: {verdict.speed}")
    if result.failed:
        print(f"  {len(result.failed)} run(s) failed and are left out: see the end of report.md")
    for name in ("report.md", "summary.csv", "curves.png", "runs.txt"):
        print(f"  {result.folder / name}")


if __name__ == "__main__":
    run_main(main)

"""Reward curves of one or more runs: custom-sac-plot logs/custom/Pendulum-v1_1 logs/sb3/Pendulum-v1_1

The value, policy and entropy landscape of a saved model: custom-sac-plot --landscape logs/custom/Pendulum-v1_1
"""

from pathlib import Path

from experiment.cli import ArgumentParser, add_trust_flag, run_main
from experiment.config import ConfigError
from experiment.evaluation import read_run_args
from experiment.landscapes import draw_saved_landscape
from experiment.plots import plot_runs


def _plot(argv: list[str] | None) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="PNG (default: RUN_DIR/rewards_plot.png for one run, else rewards_plot.png here)",
    )
    parser.add_argument(
        "--landscape",
        metavar="RUN_DIR_OR_ZIP",
        help="draw the value/policy/entropy landscape of a run's model (best_model.zip, else final) or of a model zip "
        "(default output: RUN_DIR/landscape.png)",
    )
    parser.add_argument("--env", help="--landscape: env id, for a model zip outside a run folder")
    add_trust_flag(parser)  # for --landscape
    args = parser.parse_args(argv)
    if args.landscape is not None:
        if args.runs:
            raise ConfigError("--landscape draws one model; give the run folders of reward curves without it")
        print(draw_saved_landscape(args.landscape, args.output, args.env, trust_files=args.trust_files))
        return
    if not args.runs:
        raise ConfigError("give run folders to plot (e.g. logs/custom/Pendulum-v1_1), or --landscape RUN_DIR")
    labels, envs = [], set()
    for run in args.runs:
        if not (run / "args.yml").is_file():
            raise ConfigError(f"{run} is not a run folder (no args.yml); pass folders like logs/custom/Pendulum-v1_1")
        run_args = read_run_args(run)
        labels.append(f"{run_args['algo']} {run.name}")
        envs.add(run_args["env_id"])
    output = args.output or (args.runs[0] / "rewards_plot.png" if len(args.runs) == 1 else Path("rewards_plot.png"))
    title = f"{', '.join(sorted(envs))}: {len(args.runs)} run(s)"
    print(plot_runs(args.runs, labels, title, output))


def main(argv: list[str] | None = None) -> None:
    """The ``custom-sac-plot`` command (``scripts/plot.py``, ``python -m experiment.plot_command``)."""
    run_main(lambda: _plot(argv))


if __name__ == "__main__":
    main()

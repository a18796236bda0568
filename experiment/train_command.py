"""Train CustomSAC or SB3's SAC and leave a complete run folder: custom-sac-train --algo custom"""

import shlex
import sys
from pathlib import Path

from experiment.cli import ArgumentParser, add_hyperparams_flag, add_trust_flag, positive_int, run_main
from experiment.config import ALGOS, parse_overrides
from experiment.run import TrainSettings, train
from experiment.update_path import COMPILE_SETTINGS
from experiment.zoo import VEC_ENVS


def make_parser() -> ArgumentParser:
    """The command's flags: the zoo's ``train.py`` names where it has them."""
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--algo", default="custom", choices=list(ALGOS), help="custom (ours), sb3 (SB3's SAC), ...")
    parser.add_argument("--env", default="Pendulum-v1", help="Gymnasium env id with a Box action space")
    parser.add_argument("-n", "--n-timesteps", type=positive_int, help="env steps (default: the config's)")
    parser.add_argument("--seed", type=int, help="random seed (default: random, recorded in args.yml)")
    parser.add_argument("--config", help="hyperparameter YAML: zoo format (one entry per env id) or flat")
    add_hyperparams_flag(parser, "override single hyperparameters, e.g. -params learning_rate:3e-4 tau:0.01")
    parser.add_argument("-f", "--log-folder", default="logs", help="runs go to LOG_FOLDER/<algo>/<env>_<id>")
    parser.add_argument("-tb", "--tensorboard-log", default="logs/tensorboard", help="TensorBoard folder ('' = off)")
    parser.add_argument("--eval-freq", type=positive_int, default=1000, help="evaluate every N env steps")
    parser.add_argument("--eval-episodes", type=positive_int, default=5, help="episodes per evaluation")
    parser.add_argument("--save-freq", type=int, default=5000, help="checkpoint every N steps (<= 0: off)")
    parser.add_argument("--video-freq", type=int, default=10_000, help="annotated video every N steps (<= 0: off)")
    parser.add_argument("--landscape-freq", type=int, metavar="N", help="value/policy landscape every N steps (0: off)")
    parser.add_argument("--n-envs", type=positive_int, help="parallel envs (default: the config's, else 1)")
    parser.add_argument(
        "--env-kwargs",
        nargs="+",
        default=[],
        metavar="KEY:VALUE",
        help="keyword arguments of gym.make, e.g. --env-kwargs continuous:true (replace the config's)",
    )
    parser.add_argument("--vec-env", default="dummy", choices=list(VEC_ENVS), help="VecEnv class of the training env")
    parser.add_argument(
        "--gym-packages",
        nargs="+",
        default=[],
        metavar="MODULE",
        help="modules to import first: they register extra env ids",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--compile-step",
        default="auto",
        choices=COMPILE_SETTINGS,
        help="--algo custom: torch.compile the gradient step (auto: for runs of 5,000 gradient steps or more with an "
        "MlpPolicy; off: the eager step; cudagraphs: also CUDA graphs, on a GPU)",
    )
    parser.add_argument("--resume", metavar="RUN_DIR_OR_ZIP", help="continue a run folder, or start from a model zip")
    add_trust_flag(parser)  # for --resume
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", type=int, default=1, choices=[0, 1, 2])
    return parser


def parse_args(argv: list[str] | None = None) -> TrainSettings:
    """The run's settings from the command line (``argv``; ``None``: ``sys.argv[1:]``)."""
    args = make_parser().parse_args(argv)
    return TrainSettings(
        algo=args.algo,
        env_id=args.env,
        n_timesteps=args.n_timesteps,
        seed=args.seed,
        config=args.config,
        overrides=parse_overrides(args.hyperparams)
        | ({} if args.landscape_freq is None else {"landscape_freq": args.landscape_freq}),
        log_folder=args.log_folder,
        tensorboard_log=args.tensorboard_log or None,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        save_freq=args.save_freq,
        video_freq=args.video_freq,
        n_envs=args.n_envs,
        env_kwargs=parse_overrides(args.env_kwargs, "--env-kwargs"),
        vec_env=args.vec_env,
        gym_packages=args.gym_packages,
        device=args.device,
        compile_step=args.compile_step,
        resume=args.resume,
        trust_files=args.trust_files,
        progress=not args.no_progress,
        verbose=args.verbose,
        command=shlex.join(
            [sys.executable, *sys.argv] if argv is None else [sys.executable, "-m", "experiment.train_command", *argv]
        ),
    )


def _train(argv: list[str] | None) -> None:
    settings = parse_args(argv)
    result = train(settings)
    print(
        f"\n{'Interrupted' if result.interrupted else 'Finished'}: {result.run_dir} in {result.wall_time_s:.1f} s "
        f"({result.env_steps_per_s:.0f} env steps/s; gradient step: {result.update_path})\n"
        f"Final evaluation ({settings.final_eval_episodes} episodes, deterministic): "
        f"{result.mean_reward:.1f} +- {result.std_reward:.1f}\nFiles:"
    )
    for path in result.files:
        print(f"  {path}")
    if (result.run_dir / "videos").is_dir():
        print(f"  {result.run_dir / 'videos'}/ (annotated episodes, mp4 and gif)")
    if result.tensorboard_dir:
        print(f"TensorBoard: tensorboard --logdir {Path(result.tensorboard_dir).parent}")
    if result.interrupted:
        sys.exit(130)  # the conventional status of a program stopped by Ctrl-C


def main(argv: list[str] | None = None) -> None:
    """The ``custom-sac-train`` command (``scripts/train.py``, ``python -m experiment.train_command``)."""
    run_main(lambda: _train(argv))


if __name__ == "__main__":
    main()

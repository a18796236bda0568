"""Train CustomSAC or SB3's SAC and leave a complete run folder: python scripts/train.py --algo custom"""

import shlex
import sys
from pathlib import Path

from experiment.cli import ArgumentParser, positive_int, run_main
from experiment.config import ALGOS, parse_overrides
from experiment.run import TrainSettings, train
from experiment.zoo import VEC_ENVS


def parse_args() -> TrainSettings:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--algo", default="custom", choices=list(ALGOS), help="custom (ours), sb3 (SB3's SAC), ...")
    parser.add_argument("--env", default="Pendulum-v1", help="Gymnasium env id with a Box action space")
    parser.add_argument("-n", "--n-timesteps", type=positive_int, help="env steps (default: the config's)")
    parser.add_argument("--seed", type=int, help="random seed (default: random, recorded in args.yml)")
    parser.add_argument("--config", help="hyperparameter YAML: zoo format (one entry per env id) or flat")
    parser.add_argument("-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE",
                        help="override single hyperparameters, e.g. -params learning_rate:3e-4 tau:0.01")  # fmt: skip
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
    parser.add_argument("--gym-packages", nargs="+", default=[], metavar="MODULE",
                        help="modules to import first: they register extra env ids")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--resume", metavar="RUN_DIR_OR_ZIP", help="continue a run folder, or start from a model zip")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="let --resume unpickle what a model zip or checkpoint cannot be opened without (this runs "
                        "code from the file: only for files you trust)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", type=int, default=1, choices=[0, 1, 2])
    args = parser.parse_args()
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
        resume=args.resume,
        trust_pickle=args.trust_pickle,
        progress=not args.no_progress,
        verbose=args.verbose,
        command=shlex.join([sys.executable, *sys.argv]),
    )


def main() -> None:
    settings = parse_args()
    result = train(settings)
    print(
        f"\n{'Interrupted' if result.interrupted else 'Finished'}: {result.run_dir} in {result.wall_time_s:.1f} s "
        f"({result.env_steps_per_s:.0f} env steps/s)\n"
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


if __name__ == "__main__":
    run_main(main)

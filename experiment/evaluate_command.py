"""Play a trained model: custom-sac-evaluate logs/custom/Pendulum-v1_1 [--episodes 10] [--video]"""

import argparse

import numpy as np

from callbacks import record_episode, write_video
from experiment.cli import ArgumentParser, add_trust_flag, positive_int, run_main
from experiment.config import ALGOS
from experiment.envs import check_env_id, make_env
from experiment.evaluation import evaluate, find_model, model_stats, run_env_spec
from experiment.zoo import EnvSpec
from saving.safe_zip import load_model


def _evaluate(argv: list[str] | None) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("path", metavar="RUN_DIR_OR_MODEL_ZIP", help="a run folder (best_model.zip, else final) or zip")
    parser.add_argument("--episodes", type=positive_int, default=10)
    parser.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="use the mean action (--stochastic samples from the policy)",
    )
    parser.add_argument("--stochastic", dest="deterministic", action="store_false", help=argparse.SUPPRESS)
    parser.add_argument("--video", action="store_true", help="also write an annotated episode (mp4 + gif)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes")
    parser.add_argument("--env", help="env id, for a model zip outside a run folder")
    parser.add_argument("--device", default="auto")
    add_trust_flag(parser)
    args = parser.parse_args(argv)

    algo, env_id, model_path, run_dir = find_model(args.path, args.env)
    spec = run_env_spec(run_dir, args.trust_files) if run_dir is not None else EnvSpec(env_id)
    check_env_id(env_id)
    stats = model_stats(model_path, run_dir, env_id)
    env = make_env(spec, evaluation=True, stats=stats)  # the run's env chain (HerReplayBuffer needs an env to load)
    model = load_model(model_path, ALGOS[algo], env, device=args.device, trust_pickle=args.trust_files)
    env.close()
    print(f"{algo} model {model_path} (trained {model.num_timesteps} steps) on {env_id}, {args.episodes} episodes")
    if stats is not None:
        print(f"observations normalised with the frozen statistics of {stats}")
    returns, lengths = evaluate(model, spec, args.episodes, args.deterministic, args.seed, stats)
    for i, (ret, length) in enumerate(zip(returns, lengths)):
        print(f"  episode {i + 1:3d}: return {ret:9.2f}  length {length}")
    mode = "deterministic" if args.deterministic else "stochastic"
    print(f"mean return {np.mean(returns):.2f} +- {np.std(returns):.2f} ({mode})")

    if args.video:
        env = make_env(spec, evaluation=True, render_mode="rgb_array", stats=stats)
        frames, rewards = record_episode(model, env, args.deterministic, model.num_timesteps, seed=args.seed)
        env.close()
        folder = (run_dir or model_path.parent) / "videos"
        stem, n = f"evaluate_{model_path.stem}", 1
        while (folder / f"{stem}_{n}.mp4").exists():  # never overwrite an earlier video
            n += 1
        mp4, gif = write_video(frames, folder / f"{stem}_{n}")
        print(f"video of one episode (return {sum(rewards):.2f}): {mp4} and {gif}")


def main(argv: list[str] | None = None) -> None:
    """The ``custom-sac-evaluate`` command (``scripts/evaluate.py``, ``python -m experiment.evaluate_command``)."""
    run_main(lambda: _evaluate(argv))


if __name__ == "__main__":
    main()

"""Steps per second of CustomSAC against SB3's SAC, measured in one process, interleaved.

    python bench/sps.py                   # Pendulum-v1, [256, 256], batch 256, CPU
    python bench/sps.py --device cuda     # where a GPU is present

Both algorithms get identical hyperparameters and seeds. After both have filled ``learning_starts``, they take
turns learning ``--chunk`` env steps for ``--rounds`` rounds, so that machine noise (other processes, thermal
state) hits both alike; the figure is the ratio. A second table times ``train()`` alone (gradient steps on a full
buffer, no env), which separates the update from the env-interaction loop.
"""

import argparse
import gc
import resource
import time

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm

from custom_sac import CustomSAC

ALGOS = {"custom": CustomSAC, "sb3": SAC}
BUFFER_SIZE = 100_000


def parse_args(description: str | None = __doc__) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per algorithm")
    parser.add_argument("--chunk", type=int, default=600, help="env steps per algorithm per round")
    parser.add_argument("--learning-starts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--net-arch", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--train-steps", type=int, default=300, help="gradient steps per round of the train() table")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return parser.parse_args()


def timed(fn) -> float:
    if th.cuda.is_available():
        th.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if th.cuda.is_available():
        th.cuda.synchronize()
    return time.perf_counter() - start


def summary(name: str, rates: dict[str, list[float]]) -> None:
    print(f"\n{name}")
    for algo, values in rates.items():
        spread = f"median of {len(values)}; min {min(values):.1f}, max {max(values):.1f}"
        print(f"  {algo:7s} {np.median(values):8.1f} steps/s  ({spread})")
    ratios = np.array(rates["custom"]) / np.array(rates["sb3"])
    print(
        f"  ratio   {np.median(ratios):8.2f} x      (custom / sb3, per round: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


def build_models(args: argparse.Namespace) -> dict[str, BaseAlgorithm]:
    """CustomSAC and SB3's SAC with identical hyperparameters and seeds (also used by ``bench/profile_step.py``)."""
    if args.threads:
        th.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not th.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU; run with --device cpu")
    hyperparams = dict(
        learning_rate=1e-3,
        batch_size=args.batch_size,
        learning_starts=args.learning_starts,
        train_freq=1,
        gradient_steps=1,
        buffer_size=BUFFER_SIZE,
        policy_kwargs=dict(net_arch=args.net_arch),
        device=args.device,
        seed=0,
    )
    models = {name: cls("MlpPolicy", args.env, **hyperparams) for name, cls in ALGOS.items()}
    print(
        f"env {args.env}, net_arch {args.net_arch}, batch {args.batch_size}, device {models['custom'].device}, "
        f"torch threads {th.get_num_threads()}, torch {th.__version__}"
    )
    return models


def main() -> None:
    args = parse_args()
    models = build_models(args)

    for model in models.values():  # warm-up: fill learning_starts and a few updates (allocations, caches)
        model.learn(args.learning_starts + 100)

    env_rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            gc.collect()
            seconds = timed(lambda m=model: m.learn(args.chunk, reset_num_timesteps=False))
            env_rates[name].append(args.chunk / seconds)
    summary(f"learn(): env steps per second, 1 gradient step each, {args.rounds} x {args.chunk} steps", env_rates)

    train_rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            seconds = timed(lambda m=model: m.train(gradient_steps=args.train_steps, batch_size=args.batch_size))
            train_rates[name].append(args.train_steps / seconds)
    summary(f"train(): gradient steps per second, {args.rounds} x {args.train_steps}", train_rates)

    print("\nmemory")
    for name, model in models.items():
        params = sum(p.numel() * p.element_size() for p in model.policy.parameters())
        print(f"  {name:7s} policy parameters {params / 2**20:.2f} MiB")
    if th.cuda.is_available() and models["custom"].device.type == "cuda":
        print(f"  GPU peak allocated (both models) {th.cuda.max_memory_allocated() / 2**20:.1f} MiB")
    print(
        f"  process peak RSS (both models, replay buffers of {BUFFER_SIZE}) "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB"
    )


if __name__ == "__main__":
    main()

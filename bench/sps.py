"""Steps per second of CustomSAC against SB3's SAC and SBX's SAC, measured in one process, interleaved.

    python bench/sps.py                                   # custom vs sb3, Pendulum-v1, [256, 256], batch 256
    python bench/sps.py --algos custom sb3 sbx            # SBX too: pip install -c constraints.txt -e ".[bench]"
    python bench/sps.py --algos custom sb3 sbx --env HalfCheetah-v4   # needs gymnasium[mujoco]
    python bench/sps.py --device cuda                     # where a GPU is present

All algorithms get identical hyperparameters and seeds (``learning_rate`` 1e-3, one gradient step per env step).
After each has filled ``learning_starts`` and taken a few updates (allocations, caches, JAX's compilation),
they take turns learning ``--chunk`` env steps for ``--rounds`` rounds, so that machine noise (other processes,
thermal state) hits all alike; the figure is the ratio, taken per round. A second table times ``train()`` alone
(gradient steps on a full buffer, no env), which separates the update from the env-interaction loop.
"""

import os

# OpenMP's threads (torch's intra-op pool) spin while they wait for work by default. On a machine shared with
# other jobs a spinning thread burns the time slice its partner needs, and a 2-thread gradient step on 2 busy
# cores ran 10-30x slower than with passive waiting (measured here at load 14). The variable must be set before
# torch loads OpenMP; set it yourself to measure another policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import gc
import importlib.util
import resource
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm

from custom_sac import CustomSAC

TORCH_ALGOS = {
    "custom": CustomSAC,
    "custom-compiled": partial(CustomSAC, compile_step=True),
    "custom-cudagraphs": partial(CustomSAC, compile_step="cudagraphs"),  # for GPUs; on a CPU, custom-compiled
    "sb3": SAC,
}
ALGOS = (*TORCH_ALGOS, "sbx")
BUFFER_SIZE = 100_000


def parse_args(description: str | None = __doc__) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per algorithm")
    parser.add_argument("--chunk", type=int, default=600, help="env steps per algorithm per round")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--net-arch", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--train-steps", type=int, default=300, help="gradient steps per round of the train() table")
    return parser.parse_args()


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The flags ``bench/sps.py`` shares with ``bench/scaling.py``."""
    parser.add_argument("--algos", nargs="+", choices=ALGOS, default=["custom", "sb3"],
                        help="custom or custom-compiled first: the ratios are to it")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--learning-starts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def algo_class(name: str) -> type[BaseAlgorithm]:
    if name == "sbx":
        if importlib.util.find_spec("sbx") is None:
            raise SystemExit('error: --algos sbx needs SBX: pip install -c constraints.txt -e ".[bench]"')
        from sbx import SAC as SBXSAC  # optional dependency, imported only when asked for

        return SBXSAC
    return TORCH_ALGOS[name]


def make_model(name: str, env: str, net_arch: list[int], batch_size: int, args: argparse.Namespace) -> BaseAlgorithm:
    """One algorithm with the hyperparameters every algorithm of the benchmark shares."""
    hyperparams = dict(
        learning_rate=1e-3,
        batch_size=batch_size,
        learning_starts=args.learning_starts,
        train_freq=1,
        gradient_steps=1,
        buffer_size=BUFFER_SIZE,
        policy_kwargs=dict(net_arch=net_arch),
        device=args.device,
        seed=0,
    )
    return algo_class(name)("MlpPolicy", env, **hyperparams)


def check_args(args: argparse.Namespace) -> None:
    if not args.algos[0].startswith("custom") or len(set(args.algos)) != len(args.algos):
        raise SystemExit("error: --algos must start with custom (or custom-compiled) and name each algorithm once "
                         "(the ratios are to the first)")  # fmt: skip
    if args.threads:
        th.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not th.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU; run with --device cpu")


def build_models(args: argparse.Namespace) -> dict[str, BaseAlgorithm]:
    """The algorithms of ``--algos`` with identical hyperparameters and seeds (also used by ``profile_step.py``)."""
    check_args(args)
    models = {name: make_model(name, args.env, args.net_arch, args.batch_size, args) for name in args.algos}
    print(
        f"env {args.env}, net_arch {args.net_arch}, batch {args.batch_size}, device {args.device}, "
        f"torch threads {th.get_num_threads()}, OMP_WAIT_POLICY {os.environ['OMP_WAIT_POLICY']}, "
        f"torch {th.__version__}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    return models


def timed(fn: Callable[[], object]) -> float:
    if th.cuda.is_available():
        th.cuda.synchronize()
    start = time.perf_counter()
    fn()  # SBX's train() ends with .item() on its losses, which waits for JAX's asynchronous dispatch
    if th.cuda.is_available():
        th.cuda.synchronize()
    return time.perf_counter() - start


def warm_up(models: dict[str, BaseAlgorithm], updates: int = 100) -> None:
    """Fill ``learning_starts`` and take ``updates`` gradient steps (allocations, caches, JAX's compilation)."""
    for model in models.values():
        model.learn(model.learning_starts + updates)


def interleaved_rates(models: dict[str, BaseAlgorithm], rounds: int, chunk: int) -> dict[str, list[float]]:
    """Env steps per second of ``learn()``, the algorithms taking turns for ``rounds`` rounds of ``chunk`` steps."""
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            gc.collect()
            seconds = timed(lambda m=model: m.learn(chunk, reset_num_timesteps=False))
            rates[name].append(chunk / seconds)
    return rates


def ratios(rates: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Per-round ratios of the first algorithm (custom) to each other one."""
    first, *peers = rates
    return {peer: np.array(rates[first]) / np.array(rates[peer]) for peer in peers}


def summary(name: str, rates: dict[str, list[float]]) -> None:
    print(f"\n{name}")
    for algo, values in rates.items():
        spread = f"median of {len(values)}; min {min(values):.1f}, max {max(values):.1f}"
        print(f"  {algo:17s} {np.median(values):8.1f} steps/s  ({spread})")
    for peer, per_round in ratios(rates).items():
        rounds = ", ".join(f"{r:.2f}" for r in per_round)
        ratio = f"{np.median(per_round):8.2f} x"
        print(f"  {'ratio':17s} {ratio}      ({next(iter(rates))} / {peer}, per round: {rounds})")


def train_rates(models: dict[str, BaseAlgorithm], rounds: int, steps: int, batch_size: int) -> dict[str, list[float]]:
    """Gradient steps per second of ``train()`` on the filled buffer, interleaved like :func:`interleaved_rates`."""
    for model in models.values():  # SBX compiles one loop per number of gradient steps: not timed
        model.train(gradient_steps=steps, batch_size=batch_size)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            seconds = timed(lambda m=model: m.train(gradient_steps=steps, batch_size=batch_size))
            rates[name].append(steps / seconds)
    return rates


def main() -> None:
    args = parse_args()
    models = build_models(args)
    warm_up(models)
    env_rates = interleaved_rates(models, args.rounds, args.chunk)
    summary(f"learn(): env steps per second, 1 gradient step each, {args.rounds} x {args.chunk} steps", env_rates)
    rates = train_rates(models, args.rounds, args.train_steps, args.batch_size)
    summary(f"train(): gradient steps per second, {args.rounds} x {args.train_steps}", rates)

    print("\nmemory")
    for name, model in models.items():
        params = sum(p.numel() * p.element_size() for p in model.policy.parameters())
        if params:  # SBX keeps its parameters in JAX arrays, out of torch's sight
            print(f"  {name:17s} policy parameters {params / 2**20:.2f} MiB")
    if th.cuda.is_available() and args.device.startswith("cuda"):
        print(f"  GPU peak allocated (torch models) {th.cuda.max_memory_allocated() / 2**20:.1f} MiB")
    print(
        f"  process peak RSS (all models, replay buffers of {BUFFER_SIZE}) "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB"
    )


if __name__ == "__main__":
    main()

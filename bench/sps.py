"""Steps per second of CustomSAC against SB3's SAC and SBX's SAC, each alone in its own process.

    python bench/sps.py                                           # custom vs sb3, Pendulum-v1, [256, 256]
    python bench/sps.py --algos custom-compiled custom sb3 sbx    # SBX: pip install -c constraints.txt -e ".[bench]"
    python bench/sps.py --algos custom-compiled custom sb3 sbx --env HalfCheetah-v4   # needs gymnasium[mujoco]
    python bench/sps.py --device cuda --algos custom-cudagraphs custom sb3 sbx         # where a GPU is present

Measured as users run: every algorithm in a process of its own with default threading (``--threads`` sets torch's
for an experiment; nothing else is set), built with identical hyperparameters and seeds (``learning_rate`` 1e-3,
one gradient step per env step). Warm-up is not timed: each process fills ``learning_starts`` and takes 100
updates (JAX's and torch.compile's compilation happen there) before the next one starts. Then the processes take
turns learning ``--chunk`` env steps for ``--rounds`` rounds, the order rotating every round, and the ratios are
taken per round, so that drift in the machine's load falls on all alike. A second table times ``train()`` alone
(gradient steps on the filled buffer, no env), which separates the update from the env-interaction loop.
"""

import argparse
import importlib.util
import os

import numpy as np
import torch as th
from workers import ALGOS, alternating_rates, start_workers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per algorithm")
    parser.add_argument("--chunk", type=int, default=600, help="env steps per algorithm per round")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--net-arch", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--train-steps", type=int, default=300, help="gradient steps per round of the train() table")
    return parser.parse_args()


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """The flags ``bench/sps.py`` shares with ``bench/scaling.py``."""
    parser.add_argument(
        "--algos", nargs="+", choices=ALGOS, default=["custom", "sb3"], help="a custom variant first: ratios are to it"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--learning-starts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every process (default: torch's)")


def check_args(args: argparse.Namespace) -> None:
    """Refuse, in one line, what would measure nothing useful."""
    if not args.algos[0].startswith("custom") or len(set(args.algos)) != len(args.algos):
        raise SystemExit(
            "error: --algos must start with a custom variant (custom, custom-compiled, custom-cudagraphs) and name "
            "each algorithm once (the ratios are to the first)"
        )
    if "sbx" in args.algos and importlib.util.find_spec("sbx") is None:
        raise SystemExit('error: --algos sbx needs SBX: pip install -c constraints.txt -e ".[bench]"')
    if args.device.startswith("cuda") and not th.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU; run with --device cpu")


def spec(args: argparse.Namespace, env: str, net_arch: list[int], batch_size: int) -> dict:
    """What every worker of one measurement is built from."""
    sizes = dict(env=env, net_arch=net_arch, batch_size=batch_size)
    return dict(**sizes, device=args.device, learning_starts=args.learning_starts, threads=args.threads)


def ratios(rates: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Per-round ratios of the first algorithm to each other one."""
    first, *peers = rates
    return {peer: np.array(rates[first]) / np.array(rates[peer]) for peer in peers}


def summary(title: str, rates: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    for algo, values in rates.items():
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {algo:17s} {np.median(values):8.1f} steps/s  (median; per round: {rounds})")
    for peer, per_round in ratios(rates).items():
        rounds = ", ".join(f"{r:.2f}" for r in per_round)
        print(f"  {next(iter(rates))} / {peer}: {np.median(per_round):.2f} x  (median; per round: {rounds})")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def main() -> None:
    args = parse_args()
    check_args(args)
    print(
        f"env {args.env}, net_arch {args.net_arch}, batch {args.batch_size}, device {args.device}, "
        f"torch {th.__version__}; {load()}"
    )
    workers = start_workers(args.algos, spec(args, args.env, args.net_arch, args.batch_size))
    for name, worker in workers.items():
        print(f"  {name:17s} {worker.info['settings']}")
    env_rates = alternating_rates(workers, "learn", args.chunk, args.rounds)
    summary(f"learn(): env steps per second, 1 gradient step each, {args.rounds} x {args.chunk} steps", env_rates)
    rates = alternating_rates(workers, "train", args.train_steps, args.rounds)
    summary(f"train(): gradient steps per second, {args.rounds} x {args.train_steps}", rates)

    print(f"\n{load()}\nmemory: peak RSS of each process (its replay buffer of 100,000 transitions allocated)")
    for name, worker in workers.items():
        print(f"  {name:17s} {worker.close()['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()

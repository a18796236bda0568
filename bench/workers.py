"""Each algorithm of a benchmark alone in its own process, timed in alternating rounds.

The parent starts one worker process per algorithm (``python bench/workers.py ...``), one after the other: each
builds its model, fills ``learning_starts`` and takes its first updates (JAX's and torch.compile's compilation
among them) before the next one starts, so no warm-up is timed and none competes with another. Then the parent
asks the workers in turn to ``learn()`` (or ``train()``) for a while and reads back the seconds each took; the
order rotates every round, so that drift in the machine's load falls on every algorithm alike. A worker waits on
its pipe while the others run, the way a user's process runs alone, with its own thread pools and default
threading.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch as th

from custom_sac import CustomSAC

TORCH_ALGOS: dict[str, Callable[..., Any]] = {
    "custom": partial(CustomSAC, compile_step=False),
    "custom-compiled": partial(CustomSAC, compile_step=True),
    "custom-cudagraphs": partial(CustomSAC, compile_step="cudagraphs"),  # for GPUs
}
ALGOS = (*TORCH_ALGOS, "sb3", "sbx")
BUFFER_SIZE = 100_000
WARM_UP_UPDATES = 100


def algo_class(name: str) -> Callable[..., Any]:
    if name == "sb3":
        from stable_baselines3 import SAC

        return SAC
    if name == "sbx":
        from sbx import SAC as SBXSAC  # optional dependency: pip install -c constraints.txt -e ".[bench]"

        return SBXSAC
    return TORCH_ALGOS[name]


def make_model(name: str, spec: dict[str, Any]) -> Any:
    """One algorithm with the hyperparameters every algorithm of the benchmark shares."""
    return algo_class(name)(
        "MlpPolicy",
        spec["env"],
        learning_rate=1e-3,
        batch_size=spec["batch_size"],
        learning_starts=spec["learning_starts"],
        train_freq=1,
        gradient_steps=1,
        buffer_size=BUFFER_SIZE,
        policy_kwargs=dict(net_arch=spec["net_arch"]),
        device=spec["device"],
        seed=0,
    )


def thread_settings() -> dict[str, Any]:
    """What decides how this process computes: torch's thread pools and kernels, and the variables read by them."""
    names = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "XLA_FLAGS", "TORCHINDUCTOR_FREEZING")
    return {
        "torch_threads": th.get_num_threads(),
        "torch_interop_threads": th.get_num_interop_threads(),
        "mkl": th.backends.mkl.is_available(),
        "mkldnn": th.backends.mkldnn.is_available() and th.backends.mkldnn.enabled,
        **{name: os.environ[name] for name in names if name in os.environ},
    }


def _timed(fn: Callable[[], object]) -> float:
    cuda = th.cuda.is_available()
    if cuda:
        th.cuda.synchronize()
    start = time.perf_counter()
    fn()  # SBX's train() ends with .item() on its losses, which waits for JAX's asynchronous dispatch
    if cuda:
        th.cuda.synchronize()
    return time.perf_counter() - start


def serve(name: str, spec: dict[str, Any]) -> None:
    """The worker: build, warm up, then answer ``learn N`` / ``train N`` with seconds, and ``quit`` with memory."""
    if spec.get("threads"):
        th.set_num_threads(spec["threads"])
    rss_before = _rss_mib()
    model = make_model(name, spec)
    model.learn(model.learning_starts + WARM_UP_UPDATES)
    _reply(dict(ready=True, settings=thread_settings(), rss_growth_mib=_rss_mib() - rss_before))
    loops: set[int] = set()
    for line in sys.stdin:
        command, _, count = line.partition(" ")
        steps = int(count or 0)
        if command == "learn":
            _reply(dict(seconds=_timed(lambda n=steps: model.learn(n, reset_num_timesteps=False))))
        elif command == "train":
            if steps not in loops:  # SBX compiles one loop per number of gradient steps: not timed
                model.train(gradient_steps=steps, batch_size=model.batch_size)
                loops.add(steps)
            _reply(dict(seconds=_timed(lambda n=steps: model.train(gradient_steps=n, batch_size=model.batch_size))))
        else:
            _reply(dict(peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10))
            return


def _reply(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 2**10


class Worker:
    """The parent's handle on one algorithm's process."""

    def __init__(self, name: str, spec: dict[str, Any]):
        self.name = name
        command = [sys.executable, __file__, name, json.dumps(spec)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()  # blocks until the worker has warmed up

    def _read(self) -> dict[str, Any]:
        while True:  # libraries may print to stdout too: the replies are the lines of JSON
            line = self.process.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError(f"the {self.name} worker exited (exit code {self.process.wait()}); see above")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, command: str) -> dict[str, Any]:
        self.process.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        return self._read()

    def close(self) -> dict[str, Any]:
        reply = self.ask("quit")
        self.process.wait()
        return reply


def start_workers(names: list[str], spec: dict[str, Any]) -> dict[str, Worker]:
    """One warmed-up worker per algorithm, started one at a time."""
    return {name: Worker(name, spec) for name in names}


def alternating_rates(workers: dict[str, Worker], command: str, steps: int, rounds: int) -> dict[str, list[float]]:
    """Steps per second of each worker for ``rounds`` rounds of ``command steps``, the order rotating every round."""
    rates: dict[str, list[float]] = {name: [] for name in workers}
    names = list(workers)
    for k in range(rounds):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            rates[name].append(steps / workers[name].ask(f"{command} {steps}")["seconds"])
    return rates


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A benchmark worker; started by bench/sps.py and bench/scaling.py")
    parser.add_argument("name", choices=ALGOS)
    parser.add_argument("spec", type=json.loads)
    arguments = parser.parse_args()
    serve(arguments.name, arguments.spec)

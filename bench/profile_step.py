"""Where one gradient step of CustomSAC and of SB3's SAC spends its time, by kind of operation.

    python bench/profile_step.py                                  # custom and sb3, the models of bench/sps.py
    python bench/profile_step.py --algos custom-compiled sb3 --train-steps 500

Both models get the setup of ``bench/sps.py`` (identical hyperparameters, learning_starts filled), then
``train()`` runs under ``torch.profiler`` and every operator's own time (children excluded, so nothing is counted
twice) is put in one bucket: matrix products, optimizer steps (everything inside ``Optimizer.step``), element-wise
and reduction ops of the losses and activations, and the rest (replay sample, views, autograd bookkeeping). The
profiler adds ~1 us per op, so the totals run above what ``bench/sps.py`` measures; the buckets are for comparing.
The last lines are the ceiling: the products' floating-point work per step, the rate the CPU ran them at, and the
gradient steps per second of an update that did nothing else.
"""

import argparse
from collections import defaultdict

import torch as th
from sps import add_common_args, check_args, spec
from torch.profiler import ProfilerActivity, profile
from workers import make_model

MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"}
ELEMENTWISE = (
    "aten::clamp_min", "aten::relu", "aten::threshold_backward", "aten::mul", "aten::add", "aten::sub", "aten::div",
    "aten::exp", "aten::tanh", "aten::softplus", "aten::pow", "aten::sum", "aten::mean", "aten::min", "aten::neg",
    "aten::normal_", "aten::clamp", "aten::cat", "aten::copy_", "aten::fill_", "aten::scatter", "aten::where",
    "aten::mse_loss", "aten::lerp_", "aten::_foreach", "aten::tanh_backward", "aten::softplus_backward",
)  # fmt: skip


def bucket(event) -> str:
    node = event  # the Optimizer.step record itself (its Python wrapper) counts as optimizer time too
    while node is not None:
        if node.name.startswith("Optimizer.step"):
            return "optimizer steps"
        node = node.cpu_parent
    if event.name in MATMULS:
        return "matrix products"
    if event.name.startswith(ELEMENTWISE) or "cpp_fused" in event.name:  # the latter: inductor's fused loops
        return "element-wise, reductions"
    return "other"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--net-arch", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--train-steps", type=int, default=300, help="gradient steps profiled")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    check_args(args)
    if len(args.algos) != 2 or "sbx" in args.algos:
        raise SystemExit("error: profile_step.py profiles two torch algorithms, e.g. --algos custom sb3 (not JAX)")
    if args.threads:
        th.set_num_threads(args.threads)
    per_step: dict[str, dict[str, float]] = {}
    for name in args.algos:
        model = make_model(name, spec(args, args.env, args.net_arch, args.batch_size))
        model.learn(args.learning_starts + 100)
        model.train(gradient_steps=50, batch_size=args.batch_size)  # warm-up
        for _ in range(2):  # the first profiled run of a process pays the profiler's own start-up; keep the second
            with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
                model.train(gradient_steps=args.train_steps, batch_size=args.batch_size)
        times: dict[str, float] = defaultdict(float)
        for event in prof.events():
            times[bucket(event)] += event.self_cpu_time_total / 1e3 / args.train_steps
            times["product GFLOP"] += (event.flops or 0) / 1e9 / args.train_steps if event.name in MATMULS else 0.0
        per_step[name] = times

    kinds = ["matrix products", "optimizer steps", "element-wise, reductions", "other"]
    print(f"\nms per gradient step (main thread, profiler on), {args.train_steps} steps each")
    print(f"  {'':26s} " + " ".join(f"{name:>16s}" for name in per_step))
    for kind in [*kinds, "total"]:
        values = [sum(t[k] for k in kinds) if kind == "total" else t[kind] for t in per_step.values()]
        print(f"  {kind:26s} {values[0]:16.2f} {values[1]:16.2f}")
    # The floor of an update that is nothing but its products: no eager framework or compiler gets below it at this
    # matrix-multiply rate, so it bounds what fusing the rest can gain (SBX's whole step: see bench/sps.py's train()).
    flops = [t["product GFLOP"] for t in per_step.values()]
    rates = [f / t["matrix products"] * 1e3 for f, t in zip(flops, per_step.values())]
    alone = [1e3 / t["matrix products"] for t in per_step.values()]
    print(f"  {'products, GFLOP per step':26s} {flops[0]:16.3f} {flops[1]:16.3f}")
    print(f"  {'products, GFLOP/s':26s} {rates[0]:16.1f} {rates[1]:16.1f}")
    print(f"  {'products alone: steps/s':26s} {alone[0]:16.1f} {alone[1]:16.1f}")


if __name__ == "__main__":
    main()

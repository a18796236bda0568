"""How the speed of CustomSAC, SB3's SAC and SBX's SAC scales with network width and batch size.

    python bench/scaling.py                              # custom sb3 sbx, Pendulum-v1 and HalfCheetah-v4
    python bench/scaling.py --envs Pendulum-v1 --algos custom sb3 --widths 64 256 --batches 64 256
    python bench/scaling.py --from-json docs/scaling.json     # redraw the table and plot only (several: joined)

Every cell (env, width of both hidden layers, batch size) is measured as ``bench/sps.py`` measures: each algorithm
in a fresh process of its own, built with the same hyperparameters, warmed up untimed, then the processes take
turns learning for ``--rounds`` rounds, the order rotating. A round is as many env steps as the slowest algorithm
takes in about ``--seconds`` seconds (measured on a probe), so small cells run a few hundred steps and large ones
a few dozen, and the whole table stays short.
Memory is each algorithm's growth of its process's resident set while it is built and warmed up (its networks,
optimizer states, activations, and for SBX the JAX runtime and its compiled update); the replay buffers are
allocated but untouched, so they do not count.

Writes ``scaling.json`` (the raw figures), ``scaling.md`` (the table) and ``scaling.png`` (the plot) to ``--out``.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sps import add_common_args, check_args, ratios, spec
from workers import ALGOS, alternating_rates, start_workers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.set_defaults(algos=[a for a in ALGOS if a != "custom-cudagraphs"])  # on a CPU, custom-compiled again
    parser.add_argument("--envs", nargs="+", default=["Pendulum-v1", "HalfCheetah-v4"])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5, help="target length of one algorithm's round")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--from-json", type=Path, nargs="+", help="only write the table and plot from these files")
    parser.add_argument("--cell", nargs=3, metavar=("ENV", "WIDTH", "BATCH"), help=argparse.SUPPRESS)
    return parser.parse_args()


def run_cell(args: argparse.Namespace, env: str, width: int, batch: int) -> dict:
    """Measure one cell: a fresh worker process per algorithm (``bench/workers.py``), rounds alternating."""
    workers = start_workers(args.algos, spec(args, env, [width, width], batch))
    try:
        probe = alternating_rates(workers, "learn", 5, 1)
        chunk = int(np.clip(args.seconds * min(rates[0] for rates in probe.values()), 5, 500))
        rates = alternating_rates(workers, "learn", chunk, args.rounds)
    finally:
        memory = {name: worker.info["rss_growth_mib"] for name, worker in workers.items()}
        for worker in workers.values():
            worker.close()
    load = os.getloadavg()[0]  # the machine's load over the last minute, for reading the cell's noise
    return dict(env=env, width=width, batch=batch, chunk=chunk, rates=rates, rss_growth_mib=memory, load=load)


def run_all(args: argparse.Namespace) -> list[dict]:
    """Every cell, saved as it goes."""
    args.out.mkdir(parents=True, exist_ok=True)
    cells: list[dict] = []
    for env in args.envs:
        for width in args.widths:
            for batch in args.batches:
                start = time.perf_counter()
                cells.append(run_cell(args, env, width, batch))
                (args.out / "scaling.json").write_text(json.dumps(cells, indent=1))
                print(f"{env} width {width} batch {batch}: {time.perf_counter() - start:.0f} s", flush=True)
    return cells


def markdown(cells: list[dict]) -> str:
    algos = list(cells[0]["rates"])
    peers = algos[1:]
    header = ["env", "width", "batch", *(f"{a} steps/s" for a in algos), *(f"custom / {p}" for p in peers)]
    header += [f"{a} MiB" for a in algos]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in cells:
        row = [cell["env"], str(cell["width"]), str(cell["batch"])]
        row += [f"{np.median(cell['rates'][a]):.3g}" for a in algos]
        row += [f"{np.median(r):.2f}" for r in ratios(cell["rates"]).values()]
        row += [f"{cell['rss_growth_mib'][a]:.0f}" for a in algos]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(cells: list[dict], path: Path) -> None:
    """Per env: steps/s against batch size (one colour per algorithm), and custom's ratio to each peer."""
    envs = list(dict.fromkeys(cell["env"] for cell in cells))
    algos = list(cells[0]["rates"])
    widths = sorted({cell["width"] for cell in cells})
    styles = dict(zip(widths, ["-", "--", ":", "-."]))
    figure = Figure(figsize=(11, 4 * len(envs)))
    axes = figure.subplots(len(envs), 2, squeeze=False)
    for row, env in zip(axes, envs):
        for width in widths:
            sub = sorted((c for c in cells if c["env"] == env and c["width"] == width), key=lambda c: c["batch"])
            batches = [c["batch"] for c in sub]
            for k, algo in enumerate(algos):
                rates = [np.median(c["rates"][algo]) for c in sub]
                row[0].plot(batches, rates, styles[width], color=f"C{k}", marker="o", label=f"{algo}, width {width}")
            for k, peer in enumerate(algos[1:], start=1):
                values = [np.median(ratios(c["rates"])[peer]) for c in sub]
                row[1].plot(batches, values, styles[width], color=f"C{k}", marker="o", label=f"/ {peer}, width {width}")
        row[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="env steps / s", title=f"{env}: learn()")
        row[1].set(xscale="log", xlabel="batch size", ylabel="custom / peer", title=f"{env}: CustomSAC's ratio")
        row[1].axhline(1.0, color="grey", linewidth=0.8)
        batches = sorted({c["batch"] for c in cells})
        for ax in row:
            ax.set_xticks(batches, labels=[str(b) for b in batches])
            ax.set_xticks([], minor=True)
            ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    args = parse_args()
    if args.cell:
        env, width, batch = args.cell
        check_args(args)
        print(json.dumps(run_cell(args, env, int(width), int(batch))))
        return
    if args.from_json:
        cells = [cell for path in args.from_json for cell in json.loads(path.read_text())]
        args.out.mkdir(parents=True, exist_ok=True)
    else:
        check_args(args)
        cells = run_all(args)
    (args.out / "scaling.md").write_text(markdown(cells))
    plot(cells, args.out / "scaling.png")
    print(markdown(cells))
    print(f"wrote {args.out / 'scaling.md'}, {args.out / 'scaling.png'}")


if __name__ == "__main__":
    main()

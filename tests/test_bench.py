"""bench/: the scaling table's cell measurement, its markdown and plot, and the benchmark's refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def run_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A bench script run from ``cwd`` (a tmp folder), importing this checkout's packages."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_a_scaling_cell_times_every_algorithm_in_turns(tmp_path):
    flags = "--cell Pendulum-v1 8 16 --algos custom sb3 --rounds 2 --seconds 0.05 --learning-starts 20"
    result = run_bench(str(BENCH / "scaling.py"), *flags.split(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cell = json.loads(result.stdout.strip().splitlines()[-1])
    assert (cell["env"], cell["width"], cell["batch"]) == ("Pendulum-v1", 8, 16)
    assert list(cell["rates"]) == ["custom", "sb3"] and all(len(r) == 2 for r in cell["rates"].values())
    assert cell["chunk"] >= 5 and all(rate > 0 for rates in cell["rates"].values() for rate in rates)
    assert set(cell["rss_growth_mib"]) == {"custom", "sb3"}


def test_the_scaling_table_and_plot_come_from_saved_cells(tmp_path):
    cells = [
        dict(
            env=env,
            width=width,
            batch=batch,
            chunk=10,
            rss_growth_mib=dict(custom=3.0, sb3=2.0, sbx=500.0),
            rates=dict(custom=[30.0, 40.0, 50.0], sb3=[10.0, 20.0, 25.0], sbx=[60.0, 40.0, 25.0]),
        )
        for env in ("Pendulum-v1", "HalfCheetah-v4")
        for width in (64, 256)
        for batch in (64, 256)
    ]
    (tmp_path / "cells.json").write_text(json.dumps(cells))
    result = run_bench(str(BENCH / "scaling.py"), "--from-json", "cells.json", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "out" / "scaling.md").read_text().splitlines()
    assert len(table) == 2 + len(cells)
    # medians 40 / 20 / 40, per-round ratios custom/sb3 3, 2, 2 (median 2) and custom/sbx 0.5, 1, 2 (median 1)
    assert table[2] == "| Pendulum-v1 | 64 | 64 | 40 | 20 | 40 | 2.00 | 1.00 | 3 | 2 | 500 |"
    assert (tmp_path / "out" / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_benchmark_refuses_ratios_to_anything_but_custom(tmp_path):
    result = run_bench(str(BENCH / "sps.py"), "--algos", "sb3", "custom", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --algos must start with a custom variant (custom, custom-compiled, custom-cudagraphs) and name "
        "each algorithm once (the ratios are to the first)"
    ]


def test_each_algorithm_runs_in_its_own_process_and_the_rounds_alternate(tmp_path):
    flags = "--algos custom sb3 --rounds 3 --chunk 10 --train-steps 5 --learning-starts 20 --net-arch 8 --batch-size 8"
    result = run_bench(str(BENCH / "sps.py"), *flags.split(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("env Pendulum-v1, net_arch [8], batch 8") and "load average" in lines[0]
    assert all("'torch_threads'" in line for line in lines[1:3])  # each process's own thread settings
    per_round = [line for line in lines if "per round:" in line]
    assert len(per_round) == 6  # custom, sb3 and their ratio, for learn() and train()
    assert all(len(line.split("per round:")[1].split(",")) == 3 for line in per_round)
    ratio = next(line for line in lines if line.strip().startswith("custom / sb3"))
    assert "x  (median" in ratio
    assert lines[-2].strip().startswith("custom") and lines[-2].endswith("MiB")

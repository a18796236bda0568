import runpy
import sys
from pathlib import Path

import pytest
import torch as th

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: tiny networks gain nothing from more on a 2-core machine, and bitwise-identical
    results (exact resume) need the same reduction order every time."""
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


@pytest.fixture
def run_script(capsys, monkeypatch):
    """Run ``scripts/<name>`` in this process as ``python scripts/<name> args`` would: returns (status, stderr).

    The scripts' own ``main`` and error handling run; only the interpreter start-up is saved."""

    def run(name: str, args: list[str]) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", [name, *args])
        try:
            runpy.run_path(str(REPO / "scripts" / name), run_name="__main__")
            status = 0
        except SystemExit as e:
            status = 0 if e.code is None else e.code
        return status, capsys.readouterr().err

    return run

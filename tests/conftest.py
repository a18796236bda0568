import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch as th

REPO = Path(__file__).resolve().parents[1]

# Parity to float tolerance means float32 arithmetic, the same each time: on a GPU, cuDNN's convolutions default to
# TF32 (10-bit mantissas), which alone moved a CNN critic's loss by 3e-4 between two equal computations, and some of
# its backward algorithms add in a varying order. No effect on a CPU.
th.backends.cudnn.allow_tf32 = False
th.backends.cudnn.deterministic = True


@pytest.fixture(scope="session", autouse=True)
def checkout_under_test():
    """
    Subprocesses (the scripts) import this checkout, whatever else is installed: ``PYTHONPATH`` puts it first, ahead
    of an editable install of another checkout. And the session must leave the checkout as it found it: the same
    files under ``logs/`` and the same ``git status`` (tests write into ``tmp_path`` only).
    """
    before = _checkout_state()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        yield
    after = _checkout_state()
    for what in before:
        added, removed = sorted(set(after[what]) - set(before[what])), sorted(set(before[what]) - set(after[what]))
        assert not added and not removed, (
            f"the checkout's {what} changed during the tests (write to tmp_path; or was it you, editing meanwhile?): "
            f"added {added}, removed {removed}"
        )


def _checkout_state() -> dict[str, list[str]]:
    """Every path under ``logs/`` and every line of ``git status --porcelain`` (when this is a git checkout)."""
    state = {"logs/": sorted(str(p.relative_to(REPO)) for p in (REPO / "logs").rglob("*"))}
    if shutil.which("git") and (REPO / ".git").exists():
        status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
        state["git status"] = status.stdout.splitlines()
    return state


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

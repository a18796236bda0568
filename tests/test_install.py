"""An install that works anywhere: the project installed (not editable) into a fresh virtual environment trains
from an empty folder, with its own installed code and its shipped config."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What a build never reads: run output, caches, earlier builds.
NOT_SOURCE = shutil.ignore_patterns(".git", "logs", "__pycache__", "*.egg-info", "build", "dist", ".venv", "site")
COMMANDS = ("custom-sac-train", "custom-sac-evaluate", "custom-sac-plot", "custom-sac-tune", "custom-sac-compare")
WHERE = """
import json, experiment, saving
from experiment.config import DEFAULT_CONFIG
print(json.dumps({"experiment": experiment.__file__, "saving": saving.__file__, "config": str(DEFAULT_CONFIG)}))
"""


def run(cmd: list, cwd: Path, env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(map(str, cmd)), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_a_non_editable_install_trains_from_an_empty_folder(tmp_path):
    """
    A copy of the checkout is installed with ``pip install --no-deps`` into a venv that reuses this interpreter's
    dependencies (``--system-site-packages``), then deleted: the console command must run the venv's own copy (not
    this checkout, nor an editable install elsewhere) and find ``configs/sac.yml`` inside it.
    """
    source, venv, empty = tmp_path / "source", tmp_path / "venv", tmp_path / "empty"
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # No pip of its own: the interpreter's pip (a system site package) installs into the venv it runs in.
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp_path, env)
    bin_dir = venv / Path(sysconfig.get_path("scripts")).name
    python = bin_dir / "python"
    pip = [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", source]
    run(pip, tmp_path, env, timeout=300)
    shutil.rmtree(source)
    empty.mkdir()

    where = json.loads(run([python, "-c", WHERE], empty, env).stdout)
    for path in where.values():
        assert Path(path).resolve().is_relative_to(venv.resolve()), where  # not REPO, not another checkout
    assert Path(where["config"]).is_file()
    assert all((bin_dir / command).is_file() for command in COMMANDS)

    train = [
        bin_dir / "custom-sac-train",
        "--algo",
        "custom",
        "-n",
        "300",
        "--eval-freq",
        "150",
        "--eval-episodes",
        "1",
    ]
    proc = run([*train, "--save-freq", "0", "--video-freq", "0", "--no-progress", "--seed", "0"], empty, env, 300)
    run_dir = empty / "logs" / "custom" / "Pendulum-v1_1"
    assert f"run folder: {Path('logs') / 'custom' / 'Pendulum-v1_1'}" in proc.stdout
    for name in ("Pendulum-v1.zip", "best_model.zip", "evaluations.npz", "config.yml", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "summary.json").read_text())["n_timesteps"] == 300
    # The installed command reports a user error in one line, as the scripts do.
    bad = subprocess.run(
        [bin_dir / "custom-sac-train", "--env", "Pendulum-v9"],
        cwd=empty,
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error: unknown env id 'Pendulum-v9'"), bad.stderr

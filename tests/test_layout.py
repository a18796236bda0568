"""The shape of the house: each room says its job, imports point one way, modules and functions stay short, nothing
is squeezed to fit, importing changes nothing."""

import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from experiment.cli import PACKAGES, check_packages
from experiment.errors import UserError

REPO = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # the body (docstring included), not the signature
# Known exceptions, each with the reason it stays (or who is splitting it). Keep this list short.
LONG_MODULES: dict[str, str] = {}
LONG_FUNCTIONS: dict[str, str] = {}
# Import edges of a known cycle being removed, with who removes it; the test fails once an edge is gone, so that
# this list only shrinks.
CYCLE_EDGES: dict[tuple[str, str], str] = {}
# Lines that keep ruff's formatter away, in the whole tree: only where a table or a matrix reads better aligned.
MAX_FMT_SKIPS = 5
# The rooms, each with its job, from the top down: a room imports only the rooms below it (never one beside it).
ROOMS: dict[str, tuple[int, str]] = {
    "scripts": (4, "thin command-line wrappers of the commands below"),
    "tuning": (3, "Optuna: search space, objective, studies, storage, reports"),
    "comparison": (3, "multi-seed, multi-env comparison: data, statistics, report, plots"),
    "experiment": (2, "the zoo-like single-run runner every command shares"),
    "custom_sac": (1, "the algorithm, a native SB3 extension"),
    "callbacks": (1, "SB3 callbacks, usable with any SB3 algorithm"),
    "saving": (0, "saving and loading without pickle: zips, checkpoints, resume, normalisation"),
}
# callbacks/ holds callbacks; a module there that defines none serves one that does.
CALLBACK_HELPERS = {
    "callbacks.overlay": "draws the frames of AnnotatedVideoCallback",
    "callbacks.state_maps": "the 2-D state maps LandscapeCallback draws over",
}


def project_packages() -> list[Path]:
    return sorted(d for d in REPO.iterdir() if (d / "__init__.py").is_file())


def project_files() -> dict[str, Path]:
    """Module name -> file, for every module of the project's packages and every script."""
    files = {}
    for package in project_packages():
        for path in sorted(package.rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((REPO / "scripts").glob("*.py")):
        files[f"scripts.{path.stem}"] = path
    return files


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The project modules that ``path`` imports, anywhere in it (lazy imports inside functions too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:  # the longest name that is a module: `from a import b` may import module a.b
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
                break
    return found


def test_project_import_graph_has_no_cycle():
    files = project_files()
    graph = {name: imported_modules(name, path, set(files)) for name, path in files.items()}
    assert graph["experiment.run"] >= {"experiment.config", "experiment.folders"}  # the parser sees real imports
    for importer, imported in CYCLE_EDGES:
        assert imported in graph.get(importer, set()), f"{importer} no longer imports {imported}: unlist it"
        graph[importer].discard(imported)
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")
    assert set(order) == set(files)


def room(module: str) -> str:
    return module.split(".")[0]


def test_every_room_is_listed_with_its_job():
    assert sorted(ROOMS) == sorted([p.name for p in project_packages()] + ["scripts"])


def test_imports_point_down_from_room_to_room():
    """``scripts -> {tuning, comparison} -> experiment -> {custom_sac, callbacks} -> saving``, never up or sideways."""
    files = project_files()
    wrong = []
    for name, path in files.items():
        for imported in imported_modules(name, path, set(files)):
            if room(imported) != room(name) and ROOMS[room(imported)][0] >= ROOMS[room(name)][0]:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "imports that point up or sideways between rooms:\n" + "\n".join(wrong)


def _defines_a_callback(module: str) -> bool:
    from stable_baselines3.common.callbacks import BaseCallback

    objects = vars(importlib.import_module(module)).values()
    return any(isinstance(o, type) and issubclass(o, BaseCallback) and o.__module__ == module for o in objects)


def test_callbacks_hold_callbacks_and_saving_holds_none():
    modules = [name for name in project_files() if room(name) in ("callbacks", "saving") and "." in name]
    for module in modules:
        if room(module) == "saving":
            assert not _defines_a_callback(module), f"{module} defines a callback: it belongs in callbacks/"
        elif module not in CALLBACK_HELPERS:
            assert _defines_a_callback(module), f"{module} defines no SB3 callback: give it a room named for its job"
    assert all(_defines_a_callback(m) is False for m in CALLBACK_HELPERS)


def test_no_module_name_is_another_with_more_letters():
    """``state`` beside ``statefile``: two modules of a room whose names differ by a suffix do not say how their jobs
    differ."""
    files = project_files()
    names = [name for name in files if "." in name]
    clashes = [(a, b) for a in names for b in names if a != b and b.startswith(a) and room(a) == room(b)]
    assert not clashes, clashes


def test_nothing_is_squeezed_past_the_formatter():
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout: every Python file under the root
        tracked = [str(p.relative_to(REPO)) for p in REPO.rglob("*.py")]
    skips = [
        f"{f}:{i}"
        for f in tracked
        for i, line in enumerate((REPO / f).read_text().splitlines(), 1)
        if line.rstrip().endswith("# fmt: skip")
    ]
    assert len(skips) <= MAX_FMT_SKIPS, f"{len(skips)} '# fmt: skip' lines (at most {MAX_FMT_SKIPS}):\n" + "\n".join(
        skips
    )


# Variables that the rendering, threading and plotting libraries read: a package must not set them when imported.
UNSET_FOR_THE_IMPORT_TEST = (
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "SDL_VIDEODRIVER",
    "MUJOCO_GL",
    "PYOPENGL_PLATFORM",
    "MPLBACKEND",
    "PYGAME_HIDE_SUPPORT_PROMPT",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUSTOM_SAC_TORCH_THREADS",
)


def test_every_module_imports_in_a_fresh_interpreter_without_side_effects():
    """Each module and script imports (scripts as modules, so their main() does not run) from this checkout, and
    importing all of them leaves ``os.environ``, matplotlib's backend and settings, and torch's thread settings as
    they were (in an interpreter where none of the variables they could set is set, as on a headless machine)."""
    files = {name: str(path) for name, path in project_files().items()}
    code = textwrap.dedent(
        """
        import importlib, importlib.util, json, os, sys
        import matplotlib, torch
        import gymnasium, optuna, stable_baselines3  # what they do when imported is theirs, not ours
        raw = lambda: {k: str(v) for k, v in dict.items(matplotlib.rcParams) if k != "backend"}  # no backend lookup
        threads = lambda: [torch.get_num_threads(), torch.get_num_interop_threads()]
        backend, params = matplotlib.rcParams._get_backend_or_none(), raw()
        environ, torch_threads = dict(os.environ), threads()
        origins = {}
        for name, path in json.loads(sys.argv[1]).items():
            if name.startswith("scripts."):
                spec = importlib.util.spec_from_file_location(name.replace(".", "_"), path)
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
                origins[name] = path
            else:
                origins[name] = importlib.import_module(name).__file__
        changed = sorted(k for k, v in raw().items() if params[k] != v)
        environ_changed = sorted(k for k in {*environ, *os.environ} if environ.get(k) != os.environ.get(k))
        print(json.dumps({"origins": origins, "changed": changed, "environ": environ_changed,
                          "threads": [torch_threads, threads()],
                          "backend": [backend, matplotlib.rcParams._get_backend_or_none()]}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in UNSET_FOR_THE_IMPORT_TEST}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(files)], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["origins"] == files  # this checkout's code, not an installed copy
    assert result["environ"] == [], result["environ"]
    assert result["changed"] == [] and result["backend"][0] == result["backend"][1], result
    assert result["threads"][0] == result["threads"][1], result["threads"]


def _function_lengths(tree: ast.AST) -> dict[str, int]:
    lengths = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for child in node.body:
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    child.name = f"{node.name}.{child.name}"  # qualified, for the allow-list
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lengths[node.name] = node.end_lineno - node.body[0].lineno + 1
    return lengths


def test_modules_and_functions_are_short():
    too_long = []
    for path in [*(p for d in project_packages() for p in sorted(d.rglob("*.py"))), *(REPO / "scripts").glob("*.py")]:
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES and rel not in LONG_MODULES:
            too_long.append(f"{rel}: {lines} lines (limit {MAX_MODULE_LINES})")
        for function, length in _function_lengths(ast.parse(text)).items():
            if length > MAX_FUNCTION_LINES and f"{rel}::{function}" not in LONG_FUNCTIONS:
                too_long.append(f"{rel}::{function}: {length} lines (limit {MAX_FUNCTION_LINES})")
    assert not too_long, "split these into named steps (or allow-list them with a reason):\n" + "\n".join(too_long)


def test_allow_lists_name_what_exists():
    """An entry whose module or function is gone (or has become short) is removed, so the list only shrinks."""
    for rel in LONG_MODULES:
        assert len((REPO / rel).read_text().splitlines()) > MAX_MODULE_LINES, f"{rel} is short now: unlist it"
    for entry in LONG_FUNCTIONS:
        rel, function = entry.split("::")
        lengths = _function_lengths(ast.parse((REPO / rel).read_text())) if (REPO / rel).is_file() else {}
        assert lengths.get(function, 0) > MAX_FUNCTION_LINES, f"{entry} is gone or short now: unlist it"


def test_every_package_is_checked_for_shadowing():
    assert sorted(PACKAGES) == sorted(p.name for p in project_packages())


def run_plot_with_path(tmp_path: Path, pythonpath: list[Path]) -> subprocess.CompletedProcess:
    """``scripts/plot.py`` run from ``tmp_path`` with ``PYTHONPATH`` set to ``pythonpath``, in that order."""
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "plot.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))},
    )


def test_a_package_from_elsewhere_is_one_clear_error(tmp_path):
    """Another package named like one of ours, ahead on the path, is refused in one line naming both places."""
    shadow = tmp_path / "tuning"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    proc = run_plot_with_path(tmp_path, [tmp_path, REPO])
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: package 'tuning' is imported from {shadow / '__init__.py'}"), proc.stderr


def test_a_script_of_another_checkout_is_refused(tmp_path):
    other = tmp_path / "other_checkout"
    (other / "experiment").mkdir(parents=True)
    (other / "experiment" / "cli.py").write_text("")
    with pytest.raises(UserError, match=f"belongs to the checkout {other} but imports this project from {REPO}"):
        check_packages(other / "scripts" / "train.py")
    check_packages(REPO / "scripts" / "train.py")


def test_another_distribution_claiming_our_name_is_one_clear_error(tmp_path):
    """Installing a package that also holds ``tuning`` would break one of the two: refused, naming the other."""
    dist_info = tmp_path / "tuning_helpers-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: tuning-helpers\nVersion: 1.0\n")
    (dist_info / "RECORD").write_text("tuning/__init__.py,,\ntuning_helpers-1.0.dist-info/METADATA,,\n")
    proc = run_plot_with_path(tmp_path, [REPO, tmp_path])
    assert proc.returncode == 1, proc.stderr
    assert (
        proc.stderr == "error: package 'tuning' is also installed by tuning-helpers; uninstall the "
        "other one, or use a separate virtual environment\n"
    )

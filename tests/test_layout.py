"""The shape of the house: imports point one way, modules and functions stay short, importing changes nothing."""

import ast
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


def test_every_module_imports_in_a_fresh_interpreter_without_side_effects():
    """Each module and script imports (scripts as modules, so their main() does not run) from this checkout, and
    importing all of them leaves matplotlib's backend and settings as they were."""
    files = {name: str(path) for name, path in project_files().items()}
    code = textwrap.dedent(
        """
        import importlib, importlib.util, json, sys
        import matplotlib
        raw = lambda: {k: str(v) for k, v in dict.items(matplotlib.rcParams) if k != "backend"}  # no backend lookup
        backend, params = matplotlib.rcParams._get_backend_or_none(), raw()
        origins = {}
        for name, path in json.loads(sys.argv[1]).items():
            if name.startswith("scripts."):
                spec = importlib.util.spec_from_file_location(name.replace(".", "_"), path)
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
                origins[name] = path
            else:
                origins[name] = importlib.import_module(name).__file__
        changed = sorted(k for k, v in raw().items() if params[k] != v)
        print(json.dumps({"origins": origins, "changed": changed,
                          "backend": [backend, matplotlib.rcParams._get_backend_or_none()]}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(files)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["origins"] == files  # this checkout's code, not an installed copy
    assert result["changed"] == [] and result["backend"][0] == result["backend"][1], result


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

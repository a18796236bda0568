"""What every command shares: the one wrapper that turns user errors into one line, argument types."""

import argparse
import importlib.metadata
import importlib.util
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

from experiment.errors import UserError, first_line

# This project's top-level packages: generic names, so another installed package could take any of them.
PACKAGES = ("custom_sac", "callbacks", "comparison", "experiment", "saving", "tuning")
ROOT = Path(__file__).resolve().parents[1]
# The one flag that lets files from elsewhere run code (see add_trust_flag)
TRUST_FLAG = "--trust-files"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage dump) and exits with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def add_trust_flag(parser: argparse.ArgumentParser) -> None:
    """The flag (``args.trust_files``) for run folders and model zips from elsewhere, with its one description."""
    parser.add_argument(
        TRUST_FLAG,
        action="store_true",
        help="let the given run folder or model zip run code: unpickle what a zip or checkpoint cannot be opened "
        "without, and import the modules its config.yml and args.yml name (env_wrapper, vec_env_wrapper, callback, "
        "replay_buffer_class, gym_packages) outside gymnasium, stable_baselines3, sb3_contrib, rl_zoo3 and this "
        "project. Only for files you trust",
    )


def positive_int(text: str) -> int:
    """A finite integer >= 1; ``1e4`` is accepted, ``inf``, ``nan`` and ``2.5`` are not."""
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 1 or number != int(number):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(number)


def add_hyperparams_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """The zoo's ``-params key:value ...`` (or ``--hyperparams``), for :func:`experiment.config.parse_overrides`."""
    parser.add_argument("-params", "--hyperparams", nargs="+", default=[], metavar="KEY:VALUE", help=help)


def check_packages(script: str | Path | None = None) -> None:
    """
    Raise :class:`UserError` unless this project's packages are the ones Python imports: each from this checkout
    (not another installed package of the same name, nor another checkout's editable install) and claimed by no
    other installed distribution (which ours would break, or which would shadow ours).

    :param script: the script being run; when it lies in a checkout of this project, that checkout must be this one
    """
    fix = "uninstall the other one, or use a separate virtual environment"
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None:  # not shadowed, just absent (e.g. added since an editable install): a script needing it fails
            continue
        origin = Path(spec.origin).resolve() if spec.origin else None
        if origin is None or not origin.is_relative_to(ROOT / name):
            raise UserError(f"package {name!r} is imported from {origin}, not from this project ({ROOT}); {fix}")
    for name, owners in _claims(PACKAGES).items():
        if others := sorted(owners - {"custom-sac"}):
            raise UserError(f"package {name!r} is also installed by {', '.join(others)}; {fix}")
    checkout = Path(script).resolve().parents[1] if script else None
    if checkout is not None and checkout != ROOT and (checkout / "experiment" / "cli.py").is_file():
        raise UserError(
            f"{script} belongs to the checkout {checkout} but imports this project from {ROOT}; run "
            f"'pip install -e .' in {checkout}, or set PYTHONPATH={checkout}"
        )


def _claims(names: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level name -> the installed distributions (normalised names) that hold it, for ``names``."""
    claims: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        declared = dist.read_text("top_level.txt")
        if declared is not None:
            tops = set(declared.split())
        else:  # wheels built without top_level.txt: the first folder (or module) of each installed file
            files = (line.split(",", 1)[0] for line in (dist.read_text("RECORD") or "").splitlines())
            tops = {Path(path).parts[0].removesuffix(".py") for path in files if path}
        for name in tops.intersection(names):
            claims.setdefault(name, set()).add(re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower())
    return claims


def run_main(main: Callable[[], object], interrupted: str = "interrupted", redact: Callable[[str], str] = str) -> None:
    """
    Run a command's ``main``: a :class:`~experiment.errors.UserError` becomes ``error: <its first line>`` on stderr
    and exit status 1, Ctrl-C outside ``main``'s own handling becomes ``interrupted`` and status 130; anything else is
    a bug and keeps its traceback.

    The packages are checked first (see :func:`check_packages`), with the script being run (``sys.argv[0]``, a
    ``scripts/*.py`` file or an installed console command) as the script that must belong to this project.

    :param main: the command's body
    :param interrupted: what to say on Ctrl-C (e.g. how to resume)
    :param redact: applied to each error line before printing (e.g. to mask passwords in URLs)
    """
    script = sys.argv[0] if sys.argv and Path(sys.argv[0]).is_file() else None
    try:
        check_packages(script)
        main()
    except UserError as e:
        sys.stderr.write(f"error: {redact(first_line(e))}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write(f"{interrupted}\n")
        sys.exit(130)  # the conventional status of a program stopped by Ctrl-C

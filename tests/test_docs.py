"""The documentation: the site builds with --strict, every flag it gives a command exists, and it speaks to users."""

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]
# The set-up commands: .ci/run runs the second verbatim, so the README must keep both word for word.
SETUP_COMMANDS = (
    "pip install -c constraints.txt -e . && python scripts/train.py --algo custom",
    'pip install -c constraints.txt -e ".[dev]" && python -m pytest -q',
)
FIRST_SCREEN = 40  # lines
MAX_README_LINES = 200
# Words of a lab notebook, not of documentation (issue numbers, work sessions, machines lent).
NOTEBOOK = re.compile(r"issue [0-9]+|session|lent to", re.IGNORECASE)

# A command of this project: a script (python scripts/train.py, bench/sps.py) or an installed console command.
COMMAND = re.compile(r"\b(?:scripts|bench)/\w+\.py\b|\bcustom-sac-(?:train|evaluate|tune|compare|plot)\b")
FLAG = re.compile(r"(?<![\w/.=:-])--?[A-Za-z][\w-]*")
# Flags of other tools that pages name in prose, outside any command of ours (the zoo's flags we do not take).
OTHER_TOOLS_FLAGS = {"--trained-agent", "--eval-env-kwargs", "-optimize"}
# Where one command ends and another begins on a shell line.
SEPARATOR = re.compile(r"&&|\|\||;|\$\(|`")


def script_of(command: str) -> Path:
    """``scripts/train.py`` -> that file; ``custom-sac-train`` -> ``scripts/train.py`` (the same flags)."""
    if command.startswith("custom-sac-"):
        return REPO / "scripts" / f"{command.removeprefix('custom-sac-')}.py"
    return REPO / command


# Runs each script's --help in one interpreter, so that torch and SB3 are imported once, and in a child process,
# so that what a script sets at import (bench's thread settings) stays out of the test process.
_HELP = """
import contextlib, io, json, runpy, sys
texts = {}
for path in sys.argv[1:]:
    sys.argv, buffer = [path, "--help"], io.StringIO()
    sys.path.insert(0, path.rsplit("/", 1)[0])
    with contextlib.redirect_stdout(buffer):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit:
            pass
    sys.path.pop(0)
    texts[path] = buffer.getvalue()
print(json.dumps(texts))
"""


@cache
def accepted_flags(scripts: tuple[Path, ...]) -> dict[Path, set[str]]:
    """The flags each script's argparse accepts, read off its ``--help`` (usage and option lines)."""
    command = [sys.executable, "-c", _HELP, *map(str, scripts)]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    flags = {}
    for path, text in json.loads(proc.stdout.splitlines()[-1]).items():
        assert text.startswith("usage:"), f"{path} --help printed no usage:\n{text}"
        usage = text.split("\n\n")[0]
        # an option line: "  -n N_TIMESTEPS, --n-timesteps N_TIMESTEPS   help text" (the help may name other flags)
        options = [line.strip().split("  ")[0] for line in text.splitlines() if line.strip().startswith("-")]
        flags[Path(path)] = set(FLAG.findall(usage)).union(*map(FLAG.findall, options))
    return flags


def logical_lines(text: str) -> Iterator[tuple[bool, str]]:
    """(in a code block, line) for each line of a page; in code blocks, continued lines are joined to their start."""
    in_code, block = False, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if in_code:
                yield from ((True, command) for command in block)
            in_code, block = not in_code, []
        elif in_code:
            line = line.split(" # ")[0].rstrip()
            if block and (line[:1].isspace() or block[-1].endswith("\\")):
                block[-1] = block[-1].removesuffix("\\") + " " + line.strip()
            else:
                block.append(line)
        else:
            yield False, line


def named_flags(text: str) -> Iterator[tuple[str | None, str]]:
    """(the command it is given to, or None for a flag named on its own in prose, flag) for each flag of a page."""
    for in_code, line in logical_lines(text):
        spans = [line] if in_code else re.findall(r"`([^`]+)`", line)
        for span in spans:
            for segment in SEPARATOR.split(span):
                found = COMMAND.search(segment)
                if found:
                    yield from ((found.group(), flag) for flag in FLAG.findall(segment[found.end() :]))
                elif not in_code and segment.strip().startswith("-"):
                    yield from ((None, flag) for flag in FLAG.findall(segment))
        if not in_code:  # a --flag in running text, outside code
            yield from ((None, flag) for flag in re.findall(r"(?<![\w`-])--[a-z][\w-]*", re.sub(r"`[^`]*`", "", line)))


def test_the_site_builds_strictly(tmp_path):
    """A broken link, a missing page or a docstring mkdocstrings cannot render fails the build."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # the child's own environment: no banner about MkDocs 2
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ent_coef_loss" in (tmp_path / "site" / "api" / "custom_sac" / "index.html").read_text()


def test_every_flag_in_the_docs_exists_in_its_script():
    named = {page: list(named_flags(page.read_text())) for page in PAGES}
    scripts = tuple(sorted({script_of(command) for flags in named.values() for command, _ in flags if command}))
    accepted = accepted_flags(scripts)
    every_flag = set().union(*accepted.values())
    unknown = [
        f"{page.relative_to(REPO)}: {command or 'prose'} {flag}"
        for page, flags in named.items()
        for command, flag in flags
        if flag not in (accepted[script_of(command)] if command else every_flag | OTHER_TOOLS_FLAGS)
    ]
    assert not unknown, "flags that no script of theirs accepts:\n" + "\n".join(unknown)


CODE_BLOCK = "```bash\npip install -c constraints.txt -e . && python scripts/train.py --algo custom -n 5\n```"
USAGE_BLOCK = "```text\npython scripts/plot.py RUN [-o OUT.png]\n    [--landscape RUN]  # comment --not-this\n```"
PROSE = "Run `custom-sac-tune --n-trials 5` or `mkdocs build --strict`; `--seed` and -dim(A) and --resume."
FOUND = {
    CODE_BLOCK: [("scripts/train.py", "--algo"), ("scripts/train.py", "-n")],
    USAGE_BLOCK: [("scripts/plot.py", "-o"), ("scripts/plot.py", "--landscape")],
    PROSE: [("custom-sac-tune", "--n-trials"), (None, "--seed"), (None, "--resume")],
}


@pytest.mark.parametrize("text", list(FOUND))
def test_flags_are_found_with_the_command_they_are_given_to(text):
    assert list(named_flags(text)) == FOUND[text]


def test_pages_speak_to_users():
    """What `grep -rniE "issue [0-9]+|session|lent to" README.md docs/` would find, in every file of the site."""
    files = [README, *(path for path in (REPO / "docs").rglob("*") if path.is_file())]
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_bytes().decode("latin-1").splitlines(), 1)
        if NOTEBOOK.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES
    first_screen = "\n".join(lines[:FIRST_SCREEN])
    for command in SETUP_COMMANDS:
        assert command in first_screen, command
    assert SETUP_COMMANDS[1] in (REPO / ".ci" / "run").read_text()


def test_the_readmes_links_and_pictures_exist():
    """The README is read on the forge, outside the site's strict build: its relative links must hold too."""
    targets = re.findall(r"\]\(([^)#\s]+)[^)]*\)|<img src=\"([^\"]+)\"", README.read_text())
    paths = [path for pair in targets for path in pair if path and "://" not in path]
    assert paths and [path for path in paths if not (REPO / path).exists()] == []

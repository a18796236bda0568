"""New numbered output folders (``logs/<algo>/<env>_<id>``, ``logs/compare/<env>_<id>``): ids are never reused."""

import re
from pathlib import Path


def new_numbered_folder(parent: str | Path, stem: str) -> Path:
    """
    Create ``<parent>/<stem>_<id>`` with id one above the highest there (1 for the first).

    :param parent: the folder that holds the numbered folders (created if missing)
    :param stem: the name before ``_<id>``, e.g. an env id
    :return: the new, empty folder; never one that existed before, even with other processes creating at once
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"{re.escape(stem)}_(\d+)")
    while True:
        ids = [int(m.group(1)) for p in parent.iterdir() if (m := pattern.fullmatch(p.name))]
        folder = parent / f"{stem}_{max(ids, default=0) + 1}"
        try:
            folder.mkdir()  # atomic: two processes cannot both create it; the loser lists again
            return folder
        except FileExistsError:
            continue

"""The ``custom-sac-compare`` command, run from a checkout: same flags (see :mod:`comparison.command`)."""

from comparison.command import main

if __name__ == "__main__":
    main()

"""The ``custom-sac-tune`` command, run from a checkout: same flags (see :mod:`tuning.command`)."""

from tuning.command import main

if __name__ == "__main__":
    main()

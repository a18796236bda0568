"""The ``custom-sac-train`` command, run from a checkout: same flags (see :mod:`experiment.train_command`)."""

from experiment.train_command import main

if __name__ == "__main__":
    main()

"""The ``custom-sac-evaluate`` command, run from a checkout: same flags (see :mod:`experiment.evaluate_command`)."""

from experiment.evaluate_command import main

if __name__ == "__main__":
    main()

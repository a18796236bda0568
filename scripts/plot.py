"""The ``custom-sac-plot`` command, run from a checkout: same flags (see :mod:`experiment.plot_command`)."""

from experiment.plot_command import main

if __name__ == "__main__":
    main()

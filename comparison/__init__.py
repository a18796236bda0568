"""Multi-seed, multi-env comparison of algorithms, built on the single-run runner in :mod:`experiment`.

The modules import one way only, each from those above it:

- :mod:`comparison.data`: the data types (a run folder read from disk, per-algo statistics, the result) and reading
  run folders;
- :mod:`comparison.stats`: per-env statistics (final return, bootstrap CIs, permutation test, speed ratios);
- :mod:`comparison.aggregate`: rliable's aggregate across envs (normalised scores, IQM, probability of
  improvement, performance profiles);
- :mod:`comparison.plots`: the figures;
- :mod:`comparison.report`: ``report.md``, ``summary.csv``, ``aggregate.csv``;
- :mod:`comparison.launch`: one training process per (env, algo, seed);
- :mod:`comparison.compare`: :func:`~comparison.compare.compare`, which ties them together.

Nothing in :mod:`experiment` imports this package.
"""

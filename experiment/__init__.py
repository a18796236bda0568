"""The zoo-like runner every script shares: configs, envs, run folders, training, evaluation, plots."""

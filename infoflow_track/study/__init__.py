"""Optuna studies of a plugin, tracked in MLflow as one parent run and a child run per trial.

- :mod:`.spec` reads and validates TOML study specs;
- :mod:`.space` validates search spaces against a plugin's hyperparameters;
- :mod:`.algorithms` builds samplers and pruners by name;
- :mod:`.storage` opens storages and recovers trials of dead workers;
- :mod:`.trial` runs one trial; :mod:`.runner` runs workers; :mod:`.report` summarises.

Importing this package imports neither torch nor optuna.
"""

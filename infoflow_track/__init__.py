"""infoflow: study how information flows through neural networks while they learn.

Importing this package is cheap: torch, mlflow and optuna load only when a name that needs
them is used. Plugins and estimators use only what is exported here, and the subpackage
:mod:`infoflow_track.measures` (MI and CKA functions); plugin tests use the conformance kit
:mod:`infoflow_track.testing`.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from infoflow_track.errors import UserError
from infoflow_track.hparams import HParams, hparam
from infoflow_track.plugin import Plugin, RunContext

try:
    __version__ = metadata.version("infoflow-track")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_LAZY = {
    "Dataset": "infoflow_track.data",
    "ESTIMATOR_API_VERSION": "infoflow_track.estimators",
    "Estimate": "infoflow_track.estimators",
    "Estimator": "infoflow_track.estimators",
    "RunSettings": "infoflow_track.settings",
    "evaluate": "infoflow_track.engine",
    "fit_backprop": "infoflow_track.plugin",
    "plan_run": "infoflow_track.experiment",
    "execute_run": "infoflow_track.experiment",
    "Tracker": "infoflow_track.tracking",
}

__all__ = [
    "HParams", "Plugin", "RunContext", "UserError", "__version__", "hparam", "measures", *_LAZY
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "measures":
        return importlib.import_module("infoflow_track.measures")
    raise AttributeError(f"module 'infoflow_track' has no attribute {name!r}")

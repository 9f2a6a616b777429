"""Metric keys and tag names, in one place (no torch, mlflow or optuna imported).

Every epoch a run logs :data:`EPOCH_METRICS`, the plugin's own metrics and, for every probed
layer, the keys built by :func:`layer_key`:

- ``mi_xt/<layer>``, ``mi_ty/<layer>``: I(X;T) and I(T;Y) in bits under the run's primary
  (first) estimator; ``ceiling_xt/<layer>``, ``ceiling_ty/<layer>``: the largest value the
  estimator can give there (e.g. log2 N for binning);
- ``mi_xt.<estimator>/<layer>`` (and ``mi_ty.``, ``ceiling_xt.``, ``ceiling_ty.``): the same
  under every other estimator of the run;
- ``mi_xt.<extra>/<layer>`` / ``mi_xt.<estimator>.<extra>/<layer>``: further values an
  estimator reports, e.g. the KDE lower bound ``mi_xt.lower`` (primary) or
  ``mi_xt.kde.lower``;
- ``cka_label/<layer>``, ``cka_init/<layer>``: linear CKA with the one-hot labels and with the
  layer at initialisation.

A run of K >= 2 replicates logs each of these as the replicates' mean, with ``sd/<key>`` and
``ci95/<key>`` beside it (see :mod:`infoflow_track.replicates`).
"""

from __future__ import annotations

import re

#: The metrics every epoch end logs before the hooks add theirs.
EPOCH_METRICS = ("acc/train", "acc/test", "loss/train", "loss/test")
#: Per-layer quantities of an estimator: its two estimates and their ceilings.
MI_QUANTITIES = ("mi_xt", "mi_ty", "ceiling_xt", "ceiling_ty")
#: Per-layer similarity measures, one of each per probed layer per epoch.
CKA_MEASURES = ("cka_label", "cka_init")
#: Probed layer names become metric keys such as ``mi_xt/<layer>``.
LAYER_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
#: A layer key: quantity, optional ``.estimator`` and ``.extra`` parts, then ``/<layer>``.
LAYER_KEY = re.compile(
    rf"(?P<quantity>{'|'.join((*MI_QUANTITIES, *CKA_MEASURES))})"
    r"(?P<qualifier>(\.[a-z][a-z0-9]*(-[a-z0-9]+)*){0,2})"
    rf"/(?P<layer>{LAYER_NAME.pattern})"
)
#: Metric names a plugin's own metrics may not start with.
FRAMEWORK_METRIC_PREFIXES = ("acc/", "loss/", "sd/", "ci95/", *(f"{q}/" for q in MI_QUANTITIES),
                             *(f"{q}." for q in MI_QUANTITIES),
                             *(f"{m}/" for m in CKA_MEASURES))  # fmt: skip

# Experiment tags, in MLflow's own terms: the kind opens the UI on the runs table (model
# training), not on the GenAI overview; the note is the experiment's description.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"
#: An experiment tag holding a saved runs-table view (columns, order, expanded runs) that a
#: UI link selects with ``viewStateShareKey=infoflow``: a study's objective and parameters in
#: view, best trial first.
RUNS_VIEW_TAG = "mlflow.sharedViewState.infoflow"
#: Shown as a run's name in the UI; set again when a trial ends pruned.
RUN_NAME_TAG = "mlflow.runName"

# Run tags.
PLUGIN_TAG = "infoflow.plugin"
STUDY_TAG = "infoflow.study"
TRIAL_NUMBER_TAG = "infoflow.trial_number"
TRIAL_STATE_TAG = "infoflow.trial_state"
ERROR_TAG = "infoflow.error"
STOPPED_TAG = "infoflow.stopped"
ESTIMATORS_TAG = "infoflow.mi"
#: Layers whose I(X;T) sat within 1% of its ceiling at every measured epoch.
SATURATED_TAG = "infoflow.saturated"
WARNINGS_TAG = "infoflow.warnings"
#: Replicates left out of the means after diverging: ``seed 3 at epoch 7, ...``.
DROPPED_TAG = "infoflow.dropped"
#: The process that writes the run, ``host:pid:start`` (see infoflow_track.owners).
OWNER_TAG = "infoflow.owner"


def qualifier(estimator: str | None, extra: str | None = None) -> str:
    """``""`` for the primary estimator's own values, else ``.estimator`` and/or ``.extra``."""
    return "".join(f".{part}" for part in (estimator, extra) if part)


def layer_key(quantity: str, layer: str, *, estimator: str | None = None,
              extra: str | None = None) -> str:  # fmt: skip
    """``mi_xt/<layer>``, ``mi_xt.renyi/<layer>``, ``mi_xt.kde.lower/<layer>``, ...

    ``estimator`` is None for the run's primary estimator (and for CKA measures).
    """
    return f"{quantity}{qualifier(estimator, extra)}/{layer}"

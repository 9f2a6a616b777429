"""The plugin contract, and the run context the engine hands to a plugin.

A plugin is a :class:`Plugin` subclass registered under the entry-point group
``infoflow.plugins``. It declares a name, a one-line summary, the plugin API version it was
written for, a frozen config dataclass (see :mod:`infoflow_track.hparams`), a default search
space and ``build(config, data)``.

The model it builds is a ``torch.nn.Module`` with

- ``forward(x) -> logits``, shape (B, num_classes), and
- ``forward_intermediates(x) -> (logits, {layer_name: activation})``, each activation of
  shape (B, ...): the probed layers, by name. Measures never depend on layer offsets.

Backprop experiments override at most :meth:`Plugin.configure_optimizer` and
:meth:`Plugin.training_step`. Other learning rules (layer-wise local rules, frozen layers, a
readout trained afterwards) override :meth:`Plugin.fit` and call :meth:`RunContext.end_epoch`
after each epoch so that they are measured and logged like any other run.

This module imports no torch at import time, so listing plugins stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

#: The plugin API this infoflow-track provides, "MAJOR.MINOR". A plugin written for "M.m" loads
#: when M equals MAJOR and m <= MINOR: a minor release only adds to the API, a major one breaks it.
PLUGIN_API_VERSION = "1.0"

if TYPE_CHECKING:
    import torch

    from infoflow_track.data import Dataset
    from infoflow_track.hparams import HParams
    from infoflow_track.settings import RunSettings


class Plugin:
    """Base class of every experiment. Subclasses set the class attributes and ``build``."""

    #: Registered name: lowercase letters, digits and dashes; equals the entry-point name.
    name: ClassVar[str] = ""
    #: One line shown by ``infoflow plugins list``.
    summary: ClassVar[str] = ""
    #: The plugin API the plugin was written for, as a literal such as ``"1.0"`` (see
    #: :data:`PLUGIN_API_VERSION`); a plugin that declares none, or an incompatible one, is
    #: listed as broken.
    api_version: ClassVar[str] = ""
    #: Frozen dataclass deriving from :class:`~infoflow_track.hparams.HParams`.
    Config: ClassVar[type[HParams]]
    #: Default Optuna search space: hyperparameter name -> distribution, as in study specs:
    #: ``{"type": "float", "low": 1e-4, "high": 1e-1, "log": True}``, ``{"type": "int",
    #: "low": 1, "high": 8, "step": 1}``, ``{"type": "categorical", "choices": ["relu"]}``.
    search_space: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Names of the extra per-epoch metrics ``fit`` passes to :meth:`RunContext.end_epoch`
    #: (e.g. ``("phase", "local/loss")``); they may be study objectives like any other.
    epoch_metrics: ClassVar[tuple[str, ...]] = ()

    def build(self, config: Any, data: Dataset) -> torch.nn.Module:
        """Return the model for ``config``, sized from ``data.input_shape``/``num_classes``."""
        raise NotImplementedError

    def total_epochs(self, config: Any, epochs: int) -> int:
        """How many epoch ends a run of ``epochs`` epochs reports; multi-phase rules override."""
        return epochs

    def configure_optimizer(self, model: torch.nn.Module, config: Any) -> torch.optim.Optimizer:
        """Adam over all parameters with ``config.lr`` (and ``config.weight_decay`` if any)."""
        import torch

        return torch.optim.Adam(
            model.parameters(), lr=config.lr, weight_decay=getattr(config, "weight_decay", 0.0)
        )

    def training_step(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, config: Any
    ) -> torch.Tensor:
        """Scalar loss of one batch: cross-entropy of ``model(x)`` (B, C) against y (B,)."""
        import torch.nn.functional as F

        return F.cross_entropy(model(x), y)

    def fit(self, model: torch.nn.Module, ctx: RunContext) -> None:
        """Train ``model`` for ``ctx.epochs`` epochs; the default is :func:`fit_backprop`."""
        fit_backprop(self, model, ctx)


def fit_backprop(plugin: Plugin, model: torch.nn.Module, ctx: RunContext) -> None:
    """The standard loop: minibatch SGD with the plugin's optimizer and training step; the
    engine evaluates, measures and logs at each ``ctx.end_epoch``."""
    optimizer = plugin.configure_optimizer(model, ctx.config)
    for _ in range(ctx.epochs):
        model.train()
        for x, y in ctx.batches():
            loss = plugin.training_step(model, x, y, ctx.config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        ctx.end_epoch(model)


@dataclass
class RunContext:
    """What a plugin's ``fit`` sees of its run: config, data on the device, and the epoch clock.

    ``end_epoch(model)`` evaluates, measures, logs one batch of metrics (step = epoch) and
    reports progress; it returns the epoch's metrics. Call it once per epoch, in every phase.
    """

    config: Any
    data: Dataset
    settings: RunSettings
    device: torch.device
    generator: torch.Generator
    _on_epoch_end: Callable[[torch.nn.Module, int, Mapping[str, float]], dict[str, float]] = field(
        repr=False
    )
    step: int = 0
    #: While the epoch-end hooks run: the engine's forward pass over the probe set at this
    #: epoch end (:class:`~infoflow_track.engine.EpochPass`), shared by its evaluation.
    epoch_pass: Any = field(default=None, repr=False)

    @property
    def epochs(self) -> int:
        return self.settings.epochs

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of training batches ``(x (B, ...), y (B,))`` by a seeded permutation."""
        import torch

        n = self.data.y_train.shape[0]
        size = self.settings.batch_size
        order = torch.randperm(n, device=self.device, generator=self.generator)
        for start in range(0, n, size):
            idx = order[start : start + size]
            yield self.data.x_train[idx], self.data.y_train[idx]

    def end_epoch(
        self, model: torch.nn.Module, metrics: Mapping[str, float] | None = None
    ) -> dict[str, float]:
        """Close an epoch: evaluate, run the epoch-end hooks, log and report. Returns metrics.

        ``metrics`` are the plugin's own values of the epoch (names declared in
        ``Plugin.epoch_metrics``), logged in the same batch.
        """
        self.step += 1
        return self._on_epoch_end(model, self.step, metrics or {})

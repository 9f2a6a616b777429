"""The conformance kit: the checks every infoflow plugin must pass, for plugin authors' suites.

In a plugin's own pytest suite, subclass :class:`PluginConformance`; pytest then runs one test
per check (as for optuna's storage test case)::

    from infoflow_track.testing import PluginConformance
    from my_plugin.plugin import MyPlugin

    class TestMyPlugin(PluginConformance):
        plugin = MyPlugin
        # dataset = "synthetic:size=120,shape=3x8x8,classes=3"  # inputs it needs, if others
        # overrides = {"width": 8}  # hyperparameters of the one-epoch run, if not the defaults

Without pytest, :func:`check_plugin` runs every check (as scikit-learn's
``check_estimator``); each check is also a plain function in :data:`CHECKS`, taking a
:class:`Subject`. A failed check raises ``AssertionError`` saying what is wrong.

The checks: the contract (API version, name, summary, config, search space, metric names);
the entry point; config validation; the default search space; the model (seeded, named
finite layers, per-sample outputs); one epoch on tiny data into a real MLflow store (SQLite,
in a temporary directory), measured and logged with finite values.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from infoflow_track.errors import UserError
from infoflow_track.hparams import HParamSpec, parse_config, specs
from infoflow_track.plugin import Plugin
from infoflow_track.registry import ContractError, Entry, check_contract, distribution_of

#: 120 images of 1 x 8 x 8 in 3 classes: what every built-in takes, MLPs and conv nets alike.
TINY_DATASET = "synthetic:size=120,shape=1x8x8,classes=3"
SPACE_SAMPLES = 8  # points drawn from the default search space


@dataclass(frozen=True)
class Subject:
    """A plugin under test, the tiny data and hyperparameters of its run, and a work folder
    for the run's MLflow store."""

    plugin: type[Plugin]
    workdir: Path
    dataset: str = TINY_DATASET
    overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"{self.plugin.__module__}:{self.plugin.__qualname__}"

    def entry(self) -> Entry:
        """An entry for the class itself, so checks run whether or not it is installed."""
        package, version = distribution_of(self.plugin.__module__)
        entry = Entry(self.plugin.name, self.target, package, version, explicit=True)
        entry._loaded = self.plugin  # the class under test, even one no import path reaches
        return entry

    def settings(self) -> Any:
        from infoflow_track.settings import RunSettings

        return RunSettings(dataset=self.dataset, epochs=1, batch_size=32, probe_size=64,
                           device="cpu")  # fmt: skip


def check_contract_holds(subject: Subject) -> None:
    """The class meets the contract, its plugin API version first."""
    try:
        check_contract(subject.plugin, subject.plugin.name)
    except ContractError as exc:
        raise AssertionError(f"contract: {exc}") from None


def check_entry_point(subject: Subject) -> None:
    """An installed distribution registers the class under its name in ``infoflow.plugins``."""
    from infoflow_track.registry import ENTRY_POINT_GROUP, discover

    name = subject.plugin.name
    entry = discover().get(name)
    assert entry is not None, (
        f"no entry point '{name}' in group '{ENTRY_POINT_GROUP}': add `{name} = "
        f'"{subject.target}"` under [project.entry-points."{ENTRY_POINT_GROUP}"] in '
        "pyproject.toml and install the package (pip install -e .)"
    )
    assert entry.broken_reason() is None, f"entry point '{name}': {entry.broken_reason()}"
    assert entry.load() is subject.plugin, (
        f"entry point '{name}' names {entry.target} ({entry.package}), not {subject.target}"
    )


def check_config_validation(subject: Subject) -> None:
    """Defaults are valid and frozen, text forms round-trip, and out-of-range values and
    unknown keys are refused with a message naming the hyperparameter."""
    config_cls = subject.plugin.Config
    default = config_cls()
    assert parse_config(config_cls, {}) == default
    assert parse_config(config_cls, default.as_params()) == default, (
        "the text form of the defaults (as logged to MLflow) does not parse back to them"
    )
    first = next(iter(specs(config_cls)), None)
    if first is not None:
        try:
            setattr(default, first, getattr(default, first))
        except dataclasses.FrozenInstanceError:
            pass
        else:
            raise AssertionError(f"{config_cls.__name__} is not frozen")
    for spec in specs(config_cls).values():
        bad = invalid_value(spec)
        try:
            config_cls(**{spec.name: bad})
        except UserError as exc:
            assert f"'{spec.name}'" in str(exc), f"the error does not name '{spec.name}': {exc}"
        else:
            raise AssertionError(
                f"{config_cls.__name__}({spec.name}={bad!r}) was accepted; valid is "
                f"{spec.valid_text} (does a __post_init__ skip HParams.__post_init__?)"
            )
    try:
        parse_config(config_cls, {"no_such_hyperparameter": "1"})
    except UserError:
        pass
    else:
        raise AssertionError("an unknown hyperparameter was accepted")


def invalid_value(spec: HParamSpec) -> Any:
    """A value of the right shape that the spec refuses: out of range, not a choice, or (with
    no range) of the wrong type."""
    scalar = spec.type if spec.type in (int, float, bool, str) else spec.type.__args__[0]
    if spec.choices is not None:
        bad: Any = "not-a-choice" if scalar is str else max(spec.choices) + 1
    elif spec.high is not None:
        bad = spec.high + 1 if scalar is int else spec.high + abs(spec.high) + 1
    elif spec.low is not None:
        bad = spec.low - 1 if scalar is int else spec.low - abs(spec.low) - 1
    else:
        bad = object()  # no type of field accepts it
    return bad if scalar is spec.type else (bad,)


def check_search_space(subject: Subject) -> None:
    """Points sampled from the default search space (Optuna's random sampler) are valid
    configs that set every searched hyperparameter."""
    import optuna

    from infoflow_track.study.space import check_space

    space = subject.plugin.search_space
    dims = check_space(space, specs(subject.plugin.Config), "search space")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(SPACE_SAMPLES):
        trial = study.ask()
        point = {key: dim.suggest(trial) for key, dim in dims.items()}
        assert set(point) == set(space)
        try:
            parse_config(subject.plugin.Config, point)
        except UserError as exc:
            message = f"search space point {point} is not a valid config: {exc}"
            raise AssertionError(message) from None


def check_model(subject: Subject) -> None:
    """The model is seeded, maps x (B, ...) to logits (B, C) equal to ``forward``'s, exposes
    named finite (B, ...) layers, and in eval mode treats each sample on its own."""
    import torch

    from infoflow_track.engine import build_model

    plan = planned(subject)
    try:
        again = build_model(plan.plugin, plan.config, plan.data, plan.settings.seed)
    except TypeError as exc:
        raise AssertionError(f"model: {exc}") from None
    model, data = plan.model, plan.data
    for (key, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"two builds with one seed differ in {key}: is build seeded?"
    model.eval()
    x = data.x_test
    with torch.no_grad():
        logits, layers = model.forward_intermediates(x)
        part_logits, part_layers = model.forward_intermediates(x[:7])
        whole = model(x)
    for name, act in {"logits": logits, **layers}.items():
        assert act.isfinite().all(), f"'{name}' has non-finite values"
    assert torch.equal(logits, whole), "forward(x) differs from forward_intermediates(x)"
    for name, act in {"logits": logits, **layers}.items():
        part = part_logits if name == "logits" else part_layers[name]
        assert torch.allclose(part, act[:7], atol=1e-5), (
            f"in eval mode '{name}' of a sample depends on the rest of the batch"
        )


def check_one_epoch_logged(subject: Subject) -> None:
    """One epoch on tiny data, recorded in a real MLflow store: the run finishes, every
    planned metric is logged each step (from step 0, the model at initialisation) with a
    finite value, every estimate lies in [0, its ceiling] and every ceiling at most log2 N,
    both figures are there, and the tags name the plugin."""
    from mlflow.tracking import MlflowClient

    from infoflow_track.experiment import execute_run
    from infoflow_track.names import CKA_MEASURES, MI_QUANTITIES
    from infoflow_track.tracking import Tracker

    uri = f"sqlite:///{subject.workdir / 'mlflow.db'}"
    plan = planned(subject)
    try:
        result = execute_run(plan, Tracker(uri), experiment="conformance")
    except Exception as exc:
        raise AssertionError(f"the run failed: {type(exc).__name__}: {exc}") from None
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED", run.data.tags.get("infoflow.error")
    steps = list(range(plan.total_epochs + 1))
    assert result.epochs == plan.total_epochs, (
        f"{result.epochs} epoch ends, expected {plan.total_epochs}"
    )
    own = set(plan.plugin.epoch_metrics)
    expected = set(plan.metric_names())
    assert set(run.data.metrics) == expected, f"logged {sorted(run.data.metrics)}"
    for key in expected:
        history = client.get_metric_history(result.run_id, key)
        logged = [m.step for m in history]
        assert logged == steps or (key in own and set(logged) < set(steps)), (
            f"{key} logged at steps {logged}, expected {steps}"
        )
        assert all(math.isfinite(m.value) for m in history), f"{key} has non-finite values"
    values = run.data.metrics
    log2_n = math.log2(plan.data.y_probe.shape[0])
    layers = {key.partition("/")[2] for key in expected if key.startswith("mi_xt/")}
    assert {f"{m}/{layer}" for m in (*MI_QUANTITIES, *CKA_MEASURES) for layer in layers} <= expected
    for layer in layers:
        for i in ("xt", "ty"):
            mi, ceiling = values[f"mi_{i}/{layer}"], values[f"ceiling_{i}/{layer}"]
            assert 0.0 <= mi <= ceiling + 1e-6 <= log2_n + 2e-6, (
                f"I({i}) = {mi} of '{layer}' is outside [0, ceiling {ceiling} <= log2 N]"
            )
    assert 0.0 <= values["acc/test"] <= 1.0
    figures = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/information_plane.png", "plots/cka_heatmap.png"} <= figures
    tags = run.data.tags
    assert (tags["infoflow.plugin"], tags["infoflow.plugin_class"]) == (
        subject.plugin.name,
        subject.target,
    )


def planned(subject: Subject) -> Any:
    """The subject's run planned as ``infoflow run`` plans it: data loaded, model built."""
    from infoflow_track.experiment import plan_run

    try:
        return plan_run(subject.entry(), dict(subject.overrides), subject.settings())
    except UserError as exc:
        raise AssertionError(
            f"cannot plan a run on {subject.dataset} with {dict(subject.overrides)}: {exc}; "
            "set the subject's dataset (or overrides) to inputs the plugin takes"
        ) from None


#: Every check, in the order they are run: each takes a :class:`Subject`.
CHECKS: dict[str, Callable[[Subject], None]] = {
    "contract": check_contract_holds,
    "entry_point": check_entry_point,
    "config_validation": check_config_validation,
    "search_space": check_search_space,
    "model": check_model,
    "one_epoch_logged": check_one_epoch_logged,
}


def check_plugin(
    plugin: type[Plugin],
    *,
    dataset: str = TINY_DATASET,
    overrides: Mapping[str, Any] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """Run every check of :data:`CHECKS` but those in ``skip`` on ``plugin``; the first that
    fails raises ``AssertionError`` prefixed with its name."""
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks {unknown}: the checks are {sorted(CHECKS)}")
    with tempfile.TemporaryDirectory(prefix="infoflow-conformance-") as workdir:
        subject = Subject(plugin, Path(workdir), dataset, dict(overrides or {}))
        for name, check in CHECKS.items():
            if name in skip:
                continue
            try:
                check(subject)
            except AssertionError as exc:
                raise AssertionError(f"{plugin.__name__} fails check '{name}': {exc}") from exc


class PluginConformance:
    """Base of a pytest class that runs every check on ``plugin``: subclass it as
    ``TestSomething`` and set the class attributes. Runs share one MLflow store per class."""

    plugin: ClassVar[type[Plugin]]
    dataset: ClassVar[str] = TINY_DATASET
    overrides: ClassVar[Mapping[str, Any]] = {}
    _workdir: ClassVar[tempfile.TemporaryDirectory]

    @classmethod
    def setup_class(cls) -> None:
        cls._workdir = tempfile.TemporaryDirectory(prefix="infoflow-conformance-")

    @classmethod
    def teardown_class(cls) -> None:
        cls._workdir.cleanup()

    def subject(self) -> Subject:
        return Subject(self.plugin, Path(self._workdir.name), self.dataset, self.overrides)

    def test_contract(self) -> None:
        check_contract_holds(self.subject())

    def test_entry_point(self) -> None:
        check_entry_point(self.subject())

    def test_config_validation(self) -> None:
        check_config_validation(self.subject())

    def test_search_space(self) -> None:
        check_search_space(self.subject())

    def test_model(self) -> None:
        check_model(self.subject())

    def test_one_epoch_logged(self) -> None:
        check_one_epoch_logged(self.subject())

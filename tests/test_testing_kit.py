"""The conformance kit itself: a sound plugin passes every check, and each planted flaw is
caught by the check meant for it, with a message that says what is wrong."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import plant_plugin

from infoflow_track import HParams, Plugin, UserError, hparam
from infoflow_track.testing import CHECKS, Subject, check_plugin


@dataclass(frozen=True)
class Config(HParams):
    lr: float = hparam(0.01, low=1e-5, high=1.0)
    width: int = hparam(8, low=1, high=64)
    depth: int = hparam(1, choices=(1, 2))


@functools.cache
def net_class() -> type:
    """The plugins' model class, made once a check first builds one: collecting imports no torch."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, n_in: int, width: int, n_out: int, flaw: str) -> None:
            super().__init__()
            self.hidden, self.out = nn.Linear(n_in, width), nn.Linear(width, n_out)
            self.flaw = flaw

        def forward_intermediates(self, x):
            h = self.hidden(x.flatten(1)).relu()
            if self.flaw == "batch":
                h = h - h.mean(0)
            if self.flaw == "nan":
                h = torch.where(h > 0, h, torch.nan)
            return self.out(h), {"hidden": h}

        def forward(self, x):
            logits = self.forward_intermediates(x)[0]
            return logits + 1 if self.flaw == "forward" else logits

    return Net


class Sound(Plugin):
    name = "kit-sound"
    summary = "a small sound plugin"
    api_version = "1.0"
    Config = Config
    search_space = {"width": {"type": "int", "low": 2, "high": 16}}  # noqa: RUF012
    flaw = ""

    def build(self, config, data):
        import torch

        net = net_class()(math.prod(data.input_shape), config.width, data.num_classes, self.flaw)
        if self.flaw == "unseeded":
            generator = torch.Generator()
            generator.seed()
            with torch.no_grad():
                net.hidden.weight.normal_(generator=generator)
        return net


class BatchDependent(Sound):
    flaw = "batch"


class NanLayer(Sound):
    flaw = "nan"


class ForwardDiffers(Sound):
    flaw = "forward"


class Unseeded(Sound):
    flaw = "unseeded"


class Diverges(Sound):
    def training_step(self, model, x, y, config):
        import torch
        import torch.nn.functional as F

        return F.cross_entropy(model(x), y) * torch.nan


class FutureAPI(Sound):
    api_version = "2.0"


@dataclass(frozen=True)
class UncheckedConfig(Config):
    def __post_init__(self) -> None:  # skips HParams.__post_init__: nothing is validated
        pass


class Unchecked(Sound):
    Config = UncheckedConfig


@dataclass(frozen=True)
class OrderedConfig(Config):
    def __post_init__(self) -> None:
        super().__post_init__()
        if self.depth > 1 and self.width < 8:
            raise UserError("depth 2 needs width >= 8")


class SpaceLeavesTheConfig(Sound):
    Config = OrderedConfig
    search_space = {  # noqa: RUF012
        "width": {"type": "int", "low": 2, "high": 16},
        "depth": {"type": "categorical", "choices": [1, 2]},
    }


def test_a_sound_plugin_passes_every_check_but_the_entry_point_it_lacks() -> None:
    check_plugin(Sound, skip=("entry_point",))
    with pytest.raises(AssertionError, match=r"fails check 'entry_point': no entry point"):
        check_plugin(Sound)


def test_the_entry_point_check_passes_once_a_distribution_registers_the_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_plugin(tmp_path, "kit-dist", {"kit-sound": f"{__name__}:Sound"}, {})
    monkeypatch.syspath_prepend(str(tmp_path))
    CHECKS["entry_point"](Subject(Sound, tmp_path))
    plant_plugin(tmp_path / "other", "kit-other", {"kit-sound": f"{__name__}:Unseeded"}, {})
    monkeypatch.syspath_prepend(str(tmp_path / "other"))
    with pytest.raises(AssertionError, match="duplicate plugin name 'kit-sound'"):
        CHECKS["entry_point"](Subject(Sound, tmp_path))


FLAWS = {
    (FutureAPI, "contract"): "written for plugin API 2.0",
    (Unchecked, "config_validation"): r"UncheckedConfig\(lr=3.0\) was accepted",
    (SpaceLeavesTheConfig, "search_space"): "is not a valid config: depth 2 needs width >= 8",
    (Unseeded, "model"): "two builds with one seed differ in hidden.weight",
    (ForwardDiffers, "model"): r"forward\(x\) differs from forward_intermediates\(x\)",
    (BatchDependent, "model"): "'logits' of a sample depends on the rest of the batch",
    (NanLayer, "model"): "'logits' has non-finite values",
    (Diverges, "one_epoch_logged"): "the run failed: DivergedError",
}


#: one_epoch_logged trains and logs a real run (seconds): slow here; the sound plugin runs it.
CAUGHT = [pytest.param(*k, marks=pytest.mark.slow) if k[1] == "one_epoch_logged" else k
          for k in FLAWS]  # fmt: skip


@pytest.mark.parametrize(("plugin", "check"), CAUGHT, ids=lambda v: getattr(v, "__name__", v))
def test_each_flaw_is_caught_by_its_check(plugin: type, check: str, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=FLAWS[plugin, check]):
        CHECKS[check](Subject(plugin, tmp_path))
    for earlier in list(CHECKS)[: list(CHECKS).index(check)]:
        if earlier != "entry_point":  # the earlier checks pass: the flaw is caught where meant
            CHECKS[earlier](Subject(plugin, tmp_path))


def test_a_plugin_needing_other_inputs_names_them_in_its_subject(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="set the subject's dataset"):
        CHECKS["one_epoch_logged"](Subject(Sound, tmp_path, dataset="synthetic:classes=1"))

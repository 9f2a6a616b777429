"""The Python examples of docs/plugins.md run as written: its two plugins pass the
conformance kit, through the kit calls the page itself shows, and its ``forward_members``
packs an MLP (packing checks it against each member)."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
from helpers import REPO

BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.mark.slow
def test_the_plugin_examples_of_the_docs_pass_the_kit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = BLOCK.findall((REPO / "docs" / "plugins.md").read_text())
    plugin, _packed_forward, rule, conformance_class, kit_calls = blocks  # forward: below
    assert "class SparseMlpPlugin(Plugin)" in plugin and "def fit(" in rule
    assert "class TestConformance(PluginConformance)" in conformance_class
    # Section 4 extends the module of section 2; section 6 calls the kit on both.
    (tmp_path / "docs_example.py").write_text("\n".join([plugin, rule, kit_calls]))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module("docs_example")  # runs check_plugin; raises if not
    finally:
        sys.modules.pop("docs_example", None)
    assert module.RandomFeaturesPlugin.epoch_metrics == ("readout/batch_loss",)


def test_the_packed_forward_of_the_docs_agrees_with_each_member() -> None:
    from helpers import cpu
    from infoflow_plugins.mlp import MLPConfig, MLPPlugin
    from infoflow_plugins.nets.mlp import MLP

    from infoflow_track.data import load_dataset
    from infoflow_track.engine import build_model
    from infoflow_track.ensemble import pack
    from infoflow_track.settings import RunSettings

    block = BLOCK.findall((REPO / "docs" / "plugins.md").read_text())[1]
    namespace: dict = {}
    exec(block, namespace)  # the page's forward_members, as written

    class DocsMLP(MLP):
        forward_members = namespace["forward_members"]

    class DocsPlugin(MLPPlugin):
        def build(self, config, data):
            model = super().build(config, data)
            model.__class__ = DocsMLP
            return model

    data = load_dataset(RunSettings(dataset="ib12"), cpu())
    plugin, config = DocsPlugin(), MLPConfig(widths=(6, 4))
    models = [build_model(plugin, config, data, seed) for seed in (0, 1)]
    packed = pack(plugin, models, config, data.x_train[:2], data.y_train[:2])  # checks it
    assert packed.native and type(packed.module) is DocsMLP

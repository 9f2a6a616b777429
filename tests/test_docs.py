"""The Python examples of docs/plugins.md run as written: its two plugins pass the
conformance kit, through the kit calls the page itself shows."""

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
    plugin, rule, conformance_class, kit_calls = blocks
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

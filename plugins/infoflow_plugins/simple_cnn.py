"""``simple-cnn``: two conv stages and a linear readout, channels configurable.

The architecture notebook's small CNN, made to fit any image the data has (1 or 3
channels, any height and width). Probed: ``conv1`` and ``conv2``, each after its pooling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from infoflow_plugins.images import image_shape
from infoflow_track import HParams, Plugin, hparam

if TYPE_CHECKING:
    from infoflow_plugins.nets.simple_cnn import SimpleCNN


@dataclass(frozen=True)
class SimpleCNNConfig(HParams):
    channels: int = hparam(8, low=1, high=512, help="channels of conv1; conv2 has twice as many")
    kernel_size: int = hparam(5, choices=(1, 3, 5, 7), help="square kernel, same padding")
    lr: float = hparam(1e-3, low=1e-6, high=1.0, log=True, help="Adam learning rate")
    weight_decay: float = hparam(0.0, low=0.0, high=1.0, help="Adam L2 weight decay")


class SimpleCNNPlugin(Plugin):
    name = "simple-cnn"
    summary = "two conv-ReLU-maxpool stages and a linear readout, for 1- or 3-channel images"
    api_version = "1.0"
    Config = SimpleCNNConfig
    search_space: ClassVar[dict[str, dict]] = {
        "channels": {"type": "int", "low": 2, "high": 32, "log": True},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    }

    def build(self, config: SimpleCNNConfig, data) -> SimpleCNN:
        from infoflow_plugins.nets.simple_cnn import SimpleCNN

        return SimpleCNN(image_shape(data, self.name), data.num_classes, config)

"""``weight-feedback``: a conv net whose classifier also sees a summary of its own weights.

The weight-feedback notebook's question: does feeding a summary of the network's fully
connected weights back into its input help? The summary, a vector of ``feedback_dim``
values, is appended to the flattened conv features before ``fc1``:

- ``none``: no feedback (the plain conv net);
- ``pool``: adaptive max-pooling of all fc weights (``fc1`` then ``fc2``, row-major) into
  ``feedback_dim`` contiguous chunks;
- ``projection``: a fixed random projection P w of all fc weights w (n values), with P of
  shape (feedback_dim, n), entries N(0, 1/feedback_dim) (norms kept in expectation), drawn from
  ``projection_seed``. P is held on the device and may take at most 64 MiB; a larger one is
  refused with the largest ``feedback_dim`` that fits.

Every size is derived from the model and the data (the notebook searched dimensions by brute
force and padded with ones). ``feedback_grad`` says whether the loss differentiates through
the summary into the weights it summarises (the notebook used ``.data``: it did not).
Probed: ``conv1``, ``conv2`` and ``fc1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from infoflow_plugins.images import image_shape
from infoflow_track import HParams, Plugin, hparam

if TYPE_CHECKING:
    from infoflow_plugins.nets.weight_feedback import WeightFeedbackNet

FEEDBACK = ("none", "pool", "projection")


@dataclass(frozen=True)
class WeightFeedbackConfig(HParams):
    feedback: str = hparam("pool", choices=FEEDBACK, help="summary of the fc weights fed back")
    feedback_dim: int = hparam(16, low=1, high=65536, help="length of the summary vector")
    feedback_grad: bool = hparam(
        False, help="whether gradients flow through the summary into the fc weights"
    )
    projection_seed: int = hparam(0, low=0, high=2**31 - 1, help="seed of the projection P")
    channels: int = hparam(5, low=1, high=512, help="channels of conv1; conv2 has twice as many")
    kernel_size: int = hparam(5, choices=(1, 3, 5, 7), help="square kernel, same padding")
    hidden: int = hparam(50, low=1, high=65536, help="width of fc1")
    lr: float = hparam(1e-3, low=1e-6, high=1.0, log=True, help="Adam learning rate")
    weight_decay: float = hparam(0.0, low=0.0, high=1.0, help="Adam L2 weight decay")


class WeightFeedbackPlugin(Plugin):
    name = "weight-feedback"
    summary = "conv net fed a summary of its own fc weights (none, max-pool or projection)"
    api_version = "1.0"
    Config = WeightFeedbackConfig
    search_space: ClassVar[dict[str, dict]] = {
        "feedback": {"type": "categorical", "choices": list(FEEDBACK)},
        "feedback_dim": {"type": "int", "low": 4, "high": 64, "log": True},
        "feedback_grad": {"type": "categorical", "choices": [False, True]},
    }

    def build(self, config: WeightFeedbackConfig, data) -> WeightFeedbackNet:
        from infoflow_plugins.nets.weight_feedback import WeightFeedbackNet

        return WeightFeedbackNet(image_shape(data, self.name), data.num_classes, config)

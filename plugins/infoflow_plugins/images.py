"""What the image built-ins ask of their data: inputs of shape (C, H, W)."""

from __future__ import annotations

from infoflow_track import UserError


def image_shape(data, plugin: str) -> tuple[int, int, int]:
    """``data.input_shape`` as (C, H, W), or a UserError saying the plugin needs images."""
    shape = tuple(data.input_shape)
    if len(shape) != 3:
        raise UserError(
            f"plugin {plugin} needs image inputs (C, H, W); dataset {data.name} has inputs of "
            f"shape {shape}: use an image dataset (digits, mnist, fashion-mnist, cifar10)"
        )
    return shape

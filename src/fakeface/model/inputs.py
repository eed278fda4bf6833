"""Input transforms: what the network sees of the pixels, built into the model by name.

A GAN leaves its traces in how neighbouring pixels relate (the up-sampling layers of its
generator copy and interpolate them), and a network trained from scratch on a few hundred faces
finds those traces far more easily when the input is the image's fine structure than when it is
the image. The transforms here are layers at the front of the model, in front of the backbone's
own scaling, so ``predict``, the served model and KServe apply them exactly as training did, and a
saved model still loads with plain Keras: each is made of built-in layers (a frozen depthwise
convolution with a fixed kernel, nearest up-sampling, a subtraction), no code of ours.

* ``pixels``: the image itself (every backbone's default).
* ``npr``: neighbouring-pixel relationships (Tan et al., CVPR 2024): the image minus the nearest-
  neighbour up-sampling of its every-other-pixel sub-sample, ``x - up2(x[::2, ::2])``. Zero on an
  image that is itself a 2x nearest up-sampling; what is left is how each 2x2 block departs from its
  top-left pixel. Same size as the image.
* ``highpass``: the diagonal detail band of a one-level Haar wavelet transform (HH: ``(a - b - c +
  d) / 2`` over each 2x2 block, per channel), the high-pass input of SAFE (Li et al., KDD 2025).
  Half the image's size.

The model's contract names its transform (``input.transform``), and the model card shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

@dataclass(frozen=True)
class InputTransform:
    name: str
    doc: str
    #: How much smaller the transformed image is than the input (the backbone is built at size / factor).
    factor: int
    builder: Any  # (inputs) -> tensor, Keras functional layers
    #: The name of the layer that marks a saved model as carrying this transform (None: pixels).
    marker: str | None = None

    def build(self, inputs: Any) -> Any:
        return self.builder(inputs)


#: The transforms by name. A plain dict like :data:`fakeface.model.backbones.BACKBONES`, for the
#: same reason: the train config validates names against it, so it imports nothing of fakeface.
TRANSFORMS: dict[str, InputTransform] = {}


def _add(transform: InputTransform) -> None:
    TRANSFORMS[transform.name] = transform


def _depthwise(kernel_2x2: list[list[float]], name: str) -> Any:
    """A frozen 2x2, stride-2 depthwise convolution applying ``kernel_2x2`` to each channel."""
    import numpy as np
    from keras import layers

    layer = layers.DepthwiseConv2D(2, strides=2, use_bias=False, trainable=False, name=name)
    layer.build((None, None, None, 3))
    layer.set_weights([np.tile(np.asarray(kernel_2x2, "float32")[:, :, None, None], (1, 1, 3, 1))])
    return layer


def _pixels(inputs: Any) -> Any:
    return inputs


def _npr(inputs: Any) -> Any:
    from keras import layers

    subsample = _depthwise([[1.0, 0.0], [0.0, 0.0]], "npr_subsample")(inputs)  # x[::2, ::2]
    upsampled = layers.UpSampling2D(2, interpolation="nearest", name="npr_upsample")(subsample)
    return layers.Subtract(name="npr")([inputs, upsampled])


def _highpass(inputs: Any) -> Any:
    return _depthwise([[0.5, -0.5], [-0.5, 0.5]], "haar_hh")(inputs)


_add(InputTransform("pixels", "the image itself", 1, _pixels))
_add(InputTransform("npr", "x - up2(x[::2, ::2]): neighbouring-pixel relationships, same size", 1, _npr, "npr"))
_add(InputTransform("highpass", "Haar HH band per channel, (a - b - c + d) / 2 per 2x2 block, half size", 2,
                    _highpass, "haar_hh"))


def get_transform(name: str) -> InputTransform:
    try:
        return TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown input transform {name!r}; expected one of {', '.join(TRANSFORMS)}") from None

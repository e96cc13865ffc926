"""Activations of the TDB search space: ReLU6 (builtin `ReLU(6.)`), ReLU and hard-swish.

Hard-swish `x * relu6(x + 3) / 6` is a small custom layer (tfmot has no builtin for it; its
QuantizeConfig lives in `mobiledets_tf.quantization`). It has two op forms, which compute the same
function and differ only in the TFLite graph they convert to:
- "fused": `x * relu6(x + 3) / 6`, which the TFLite converter fuses into one HARD_SWISH op. The CPU
  delegate (XNNPACK) runs HARD_SWISH in float but not in int8, where TFLite's own kernel is vectorized
  for ARM NEON only; the form of float models.
- "decomposed": `(x * 1/6) * relu6(x + 3)`, which the converter keeps as MUL, ADD (fused RELU6) and
  MUL, all three of which XNNPACK runs in int8; the form of int8 models.
The form is read when the layer is called (traced), from `hard_swish_form(...)`, "fused" outside it.
`hard_swish` and `hard_sigmoid` take a `quantize(name, tensor)` hook that quantization-aware training
uses to fake-quantize the intermediate tensors, at the positions the int8 graph has them.
"""
import contextlib
from typing import Callable, Optional

import tensorflow as tf

from mobiledets_tf.keras import keras
from mobiledets_tf.layers.block_rules import ACTIVATIONS

HARD_SWISH_FORMS = ("fused", "decomposed")

Quantize = Callable[[str, tf.Tensor], tf.Tensor]
_form = {"hard_swish": "fused"}


def unquantized(name: str, tensor: tf.Tensor) -> tf.Tensor:
    return tensor


def check_hard_swish_form(form: str) -> str:
    if form not in HARD_SWISH_FORMS:
        raise ValueError(f"unknown hard-swish form {form!r}; expected one of {', '.join(HARD_SWISH_FORMS)}")
    return form


@contextlib.contextmanager
def hard_swish_form(form: str):
    """Within this context, HardSwish layers called (or traced) compute in op form `form`."""
    previous = _form["hard_swish"]
    _form["hard_swish"] = check_hard_swish_form(form)
    try:
        yield
    finally:
        _form["hard_swish"] = previous


def current_hard_swish_form() -> str:
    return _form["hard_swish"]


def hard_swish(x, form: Optional[str] = None, quantize: Quantize = unquantized):
    """`x * relu6(x + 3) / 6` in op form `form` (default: the current context's)."""
    if check_hard_swish_form(form or current_hard_swish_form()) == "fused":
        return x * tf.nn.relu6(x + 3.0) / 6.0
    return quantize("scaled", x * (1.0 / 6.0)) * quantize("gate", tf.nn.relu6(x + 3.0))


def hard_sigmoid(x, quantize: Quantize = unquantized):
    """`relu6(x + 3) / 6`: the piecewise-linear sigmoid of MobileNetV3's squeeze-and-excite gate.

    The converter keeps it as ADD (fused RELU6) then MUL in every precision; `quantize` sees both."""
    return quantize("gate", quantize("shifted", tf.nn.relu6(x + 3.0)) / 6.0)


class HardSwish(keras.layers.Layer):
    """`x * relu6(x + 3) / 6` (MobileNetV3's "h-swish", MobileDets' "swish6")."""

    def call(self, inputs):
        return hard_swish(inputs)


def activation_layer(activation: str, name: str) -> keras.layers.Layer:
    """Returns a fresh Keras layer computing `activation` ("relu6", "relu" or "hard_swish")."""
    if activation == "relu6":
        return keras.layers.ReLU(6.0, name=name)
    if activation == "relu":
        return keras.layers.ReLU(name=name)
    if activation == "hard_swish":
        return HardSwish(name=name)
    raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")

"""SSDLite head: four extra feature layers after C5 and the depthwise box predictor.

As in the Object Detection API's SSDLite configs: feature maps C4, C5 and four extra layers of depths
512, 256, 256, 128 (each 1x1 conv to d/2 -> 3x3 depthwise stride 2 -> 1x1 conv to d, all BN + ReLU6,
depth `max(int(d * multiplier), min_depth)`); per feature map, separate box and class predictors of
3x3 depthwise + BN + ReLU6 then a 1x1 conv with bias (class bias initialised to -4.6). Predictions of
all maps are reshaped with static shapes to [B, anchors, 4] and [B, anchors, classes + 1] and
concatenated, which keeps every tensor rank <= 3 for the EdgeTPU. The concatenation takes at most
5 tensors per op (`layers.concatenation`), so that the CPU delegate takes it.
"""
from typing import List, Sequence

from mobiledets_tf.keras import keras
from mobiledets_tf.layers import defaults
from mobiledets_tf.layers.concatenation import AnchorConcatenate

EXTRA_LAYER_DEPTHS = (512, 256, 256, 128)
CLASS_BIAS_INIT = -4.6


def _bn_relu6(x, name: str):
    x = defaults.batch_norm(defaults.HEAD_BN, f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x)


def _conv(filters: int, name: str, use_bias: bool = False, bias_init: float = 0.0):
    return keras.layers.Conv2D(
        filters, 1, padding="same", use_bias=use_bias,
        kernel_initializer=defaults.head_initializer(),
        bias_initializer=keras.initializers.Constant(bias_init),
        kernel_regularizer=defaults.l2_regularizer(), name=name)


def _depthwise(strides: int, name: str, input_shape=None):
    if input_shape is not None and tuple(input_shape[1:3]) == (1, 1):
        # On a 1x1 map, stride 2 with "same" padding reads the same taps as stride 1 and gives the
        # same 1x1 output. Stride 1 avoids oneDNN's bfloat16 depthwise filter gradient for stride 2
        # on 1x1 inputs, which returns non-finite values (TF 2.x on CPUs with AVX512_BF16).
        strides = 1
    return keras.layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False,
        depthwise_initializer=defaults.head_initializer(), name=name)


def layer_depth(depth: int, depth_multiplier: float, min_depth: int) -> int:
    return max(int(depth * depth_multiplier), min_depth)


def wire_extra_layers(c5, depth_multiplier: float = 1.0, min_depth: int = 16,
                      depths: Sequence[int] = EXTRA_LAYER_DEPTHS, prefix: str = "extra") -> List[object]:
    """Returns the extra feature maps computed from C5, each at half the previous resolution."""
    maps, x = [], c5
    for i, depth in enumerate(depths, start=1):
        name = f"{prefix}{i}"
        x = _bn_relu6(_conv(layer_depth(depth // 2, depth_multiplier, min_depth), f"{name}_reduce")(x),
                      f"{name}_reduce")
        x = _bn_relu6(_depthwise(2, f"{name}_depthwise", x.shape)(x), f"{name}_depthwise")
        x = _bn_relu6(_conv(layer_depth(depth, depth_multiplier, min_depth), f"{name}_project")(x),
                      f"{name}_project")
        maps.append(x)
    return maps


def wire_box_predictor(feature_maps: Sequence, anchors_per_location: Sequence[int], num_classes: int,
                       prefix: str = "predictor"):
    """Returns (box_encodings [B, A, 4], class_logits [B, A, num_classes + 1])."""
    if len(feature_maps) != len(anchors_per_location):
        raise ValueError(f"{len(feature_maps)} feature maps but {len(anchors_per_location)} anchor counts")
    boxes, classes = [], []
    for i, (fmap, k) in enumerate(zip(feature_maps, anchors_per_location)):
        height, width = fmap.shape[1], fmap.shape[2]
        for kind, size, outputs, bias in (("box", 4, boxes, 0.0),
                                          ("class", num_classes + 1, classes, CLASS_BIAS_INIT)):
            name = f"{prefix}{i}_{kind}"
            x = _bn_relu6(_depthwise(1, f"{name}_depthwise")(fmap), f"{name}_depthwise")
            x = _conv(k * size, f"{name}_conv", use_bias=True, bias_init=bias)(x)
            outputs.append(keras.layers.Reshape((height * width * k, size), name=f"{name}_reshape")(x))
    # float32 outputs under mixed precision: losses and the postprocess work in float32.
    return concatenate_anchors(boxes, "box_encodings"), concatenate_anchors(classes, "class_logits")


def concatenate_anchors(tensors: Sequence, name: str):
    """Concatenates [B, A_i, C] tensors along the anchors (`AnchorConcatenate`).

    float32 under mixed precision: losses and the postprocess work in float32."""
    return AnchorConcatenate(axis=1, dtype="float32", name=name)(list(tensors))

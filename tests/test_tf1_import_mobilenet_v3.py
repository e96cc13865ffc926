"""mobiledets-import of the zoo's ssd_mobilenet_v3_{large,small}_coco checkpoints, by name table.

No TF1 reference graph of MobileNetV3 can be built here (the API's extractor needs TF-slim's `nets`
package), so each test writes a checkpoint carrying the zoo's variable names and shapes. ZOO_VARIABLES
is written independently of this package's table: names as the zoo models' graphs and checkpoint
name lists spell them (`expanded_conv_3/squeeze_excite/Conv` is 72 -> 24 in the large model's
graph), widths from TF-slim's V3_LARGE_DETECTION / V3_SMALL_DETECTION definitions, so a wrong scope,
counter or width in the table fails here.
"""
import numpy as np
import pytest

from test_tf1_parity import write_tf1_checkpoint
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.tf1_zoo.checkpoint_import import import_tf1_checkpoint
from mobiledets_tf.tf1_zoo.variable_names import UnknownTF1ArchitectureError, arch_of_variables, weight_names

V3 = "FeatureExtractor/MobilenetV3"
ZOO_VARIABLES = {
    "mobilenet_v3_large": {
        f"{V3}/Conv/weights": [3, 3, 3, 16],
        f"{V3}/expanded_conv/depthwise/depthwise_weights": [3, 3, 16, 1],   # no expand conv
        f"{V3}/expanded_conv_1/expand/weights": [1, 1, 16, 64],
        f"{V3}/expanded_conv_3/squeeze_excite/Conv/weights": [1, 1, 72, 24],  # make_divisible(72 / 4)
        f"{V3}/expanded_conv_3/squeeze_excite/Conv_1/biases": [72],
        f"{V3}/expanded_conv_12/expand/weights": [1, 1, 112, 672],           # layer_14: C4 = its expansion
        f"{V3}/expanded_conv_13/project/weights": [1, 1, 480, 80],           # halved for detection
        f"{V3}/Conv_1/weights": [1, 1, 80, 480],                             # layer_17, C5
        f"{V3}/Conv_1/BatchNorm/moving_variance": [480],
        f"{V3}/layer_17_1_Conv2d_2_1x1_256/weights": [1, 1, 480, 256],
        f"{V3}/layer_17_2_Conv2d_5_3x3_s2_128_depthwise/depthwise_weights": [3, 3, 64, 1],
        "BoxPredictor_0/ClassPredictor/weights": [1, 1, 672, 3 * 91],
        "BoxPredictor_1/BoxEncodingPredictor_depthwise/depthwise_weights": [3, 3, 480, 1],
    },
    "mobilenet_v3_small": {
        f"{V3}/Conv/weights": [3, 3, 3, 16],
        f"{V3}/expanded_conv/squeeze_excite/Conv/weights": [1, 1, 16, 8],
        f"{V3}/expanded_conv/project/weights": [1, 1, 16, 16],
        f"{V3}/expanded_conv_1/expand/weights": [1, 1, 16, 72],
        f"{V3}/expanded_conv_2/expand/weights": [1, 1, 24, 88],
        f"{V3}/expanded_conv_8/expand/weights": [1, 1, 48, 288],             # layer_10: C4 = its expansion
        f"{V3}/expanded_conv_10/squeeze_excite/Conv/weights": [1, 1, 288, 72],
        f"{V3}/Conv_1/weights": [1, 1, 48, 288],                             # layer_13, C5
        f"{V3}/layer_13_1_Conv2d_2_1x1_256/weights": [1, 1, 288, 256],
        f"{V3}/layer_13_2_Conv2d_2_3x3_s2_512/BatchNorm/gamma": [512],
        "BoxPredictor_0/BoxEncodingPredictor/weights": [1, 1, 288, 3 * 4],
        "BoxPredictor_5/ClassPredictor/biases": [6 * 91],
    },
}


def _zoo_like_checkpoint(arch: str, folder) -> tuple:
    """A checkpoint of random values under the TF1 names of a 90-class, 320x320 detector."""
    detector = SSDLiteDetector(arch, num_classes=90, input_size=320)
    rng = np.random.default_rng(0)
    tensors = {w.tf1: rng.normal(size=w.variable.shape).astype(np.float32)
               for w in weight_names(detector.model, detector.arch)}
    tensors["global_step"] = np.int64(400000)
    return write_tf1_checkpoint(str(folder / "model.ckpt-400000"), tensors), tensors


@pytest.mark.parametrize("arch", sorted(ZOO_VARIABLES))
def test_the_zoo_checkpoint_imports_by_name(arch, tmp_path):
    prefix, tensors = _zoo_like_checkpoint(arch, tmp_path)
    shapes = {name: list(value.shape) for name, value in tensors.items()}
    for name, shape in ZOO_VARIABLES[arch].items():
        assert shapes.get(name) == shape, name
    detector, report = import_tf1_checkpoint(prefix)   # the architecture and size come from the names
    assert (report.arch, report.input_size, report.num_classes) == (arch, 320, 90)
    for weight in weight_names(detector.model, detector.arch):
        np.testing.assert_array_equal(weight.variable.numpy(), tensors[weight.tf1], err_msg=weight.tf1)


def test_a_mobilenet_v3_scope_without_its_extra_layers_is_not_guessed():
    with pytest.raises(UnknownTF1ArchitectureError, match="layer_17 or layer_13"):
        arch_of_variables([f"{V3}/Conv/weights", f"{V3}/layer_19_1_Conv2d_2_1x1_256/weights"])
    assert arch_of_variables([f"{V3}/Conv/weights", f"{V3}/layer_13_1_Conv2d_2_1x1_256/weights"]) == \
        "mobilenet_v3_small"

"""Fine-tuning from COCO-trained weights: a TF1 zoo checkpoint (here the reference graph's, random
weights with the zoo's names) imported, then trained on the built-in dataset's 6 classes, QAT'd and
exported through the usual binaries; class-head rows kept for classes the COCO label map also names."""
import os

import numpy as np
import pytest

from conftest import TF1_GPU_GROUP, run_binary, tiny_config_yaml
from mobiledets_tf.config import load_config
from mobiledets_tf.data.label_map import make_label_map
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.tf1_zoo.checkpoint_import import import_tf1_checkpoint, save_imported
from mobiledets_tf.data.sources import DataSources
from mobiledets_tf.training.task import init_class_slots

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(TF1_GPU_GROUP)]
FINE_TUNE_MODEL = "{arch: mobiledet_gpu, input_size: 64, num_classes: 6}"


@pytest.fixture()
def imported(tf1_reference, tmp_path):
    """(folder of the imported MobileDet-GPU, its Keras weights by name)."""
    detector, report = import_tf1_checkpoint(tf1_reference("mobiledet_gpu", 320)["checkpoint"])
    folder = str(tmp_path / "imported")
    save_imported(detector, report, folder)
    return folder, {w.name: w.numpy() for w in detector.float_model.weights}


def is_class_conv(name: str) -> bool:
    return name.startswith("predictor") and "_class_conv/" in name


def test_other_class_count_restores_all_but_the_class_convs(imported):
    folder, weights = imported
    model = SSDLiteDetector("mobiledet_gpu", num_classes=6, input_size=64,
                            float_checkpoint=folder).float_model
    checked = 0
    for weight in model.weights:
        if is_class_conv(weight.name):
            assert weight.shape != weights[weight.name].shape
        else:
            np.testing.assert_array_equal(weight.numpy(), weights[weight.name], err_msg=weight.name)
            checked += 1
    assert checked == len(model.weights) - 12   # 6 class convs x (kernel, bias)


def test_map_coco_classes_keeps_the_rows_of_coco_names(imported):
    folder, weights = imported
    label_map = make_label_map([(1, "Person"), (2, "widget"), (3, "CAR")])
    config = load_config(overrides=[f"train.init_checkpoint={folder!r}", "train.init_map_classes=true",
                                    "model.num_classes=3"])
    data = DataSources("", "", "", label_map, ["Person", "widget", "CAR"], 3)
    slots = init_class_slots(config, data)
    assert slots == [0, 1, None, 3]   # background, person (COCO 1), unknown, car (COCO 3)
    model = SSDLiteDetector("mobiledet_gpu", num_classes=3, input_size=64, float_checkpoint=folder,
                            init_class_slots=slots).float_model
    for layer in range(6):
        name = f"predictor{layer}_class_conv/kernel:0"
        new, old = model.get_layer(f"predictor{layer}_class_conv").kernel.numpy(), weights[name]
        anchors = new.shape[-1] // 4
        for anchor in range(anchors):
            for slot, old_slot in ((0, 0), (1, 1), (3, 3)):
                np.testing.assert_array_equal(new[..., anchor * 4 + slot], old[..., anchor * 91 + old_slot])
            assert not any(np.array_equal(new[..., anchor * 4 + 2], old[..., c]) for c in range(old.shape[-1]))


def test_fine_tune_then_qat_then_export_through_the_binaries(imported, tiny_data_dir, tmp_path):
    folder, _ = imported
    config = tmp_path / "fine_tune.yaml"
    config.write_text(tiny_config_yaml(model=FINE_TUNE_MODEL, steps=2, checkpoint_every=2))
    float_dir, qat_dir = tmp_path / "float", tmp_path / "qat"
    run = run_binary("train", f"--config={config}", f"--model_dir={float_dir}",
                     f"--init_checkpoint={folder}")
    assert "restored 382 weights" in run.stderr
    assert "started fresh (another class count): predictor0_class_conv/kernel" in run.stderr
    assert "step 2/2" in run.stderr
    run_binary("train", f"--config={config}", f"--model_dir={qat_dir}", "--quantization=qat",
               f"--init_checkpoint={float_dir}", "--override=train.steps=1")
    run_binary("export", f"--model_dir={qat_dir}", "--nosaved_model")
    exported = os.listdir(qat_dir / "export")
    assert "mobiledet_gpu_64_int8_qat.tflite" in exported and "labels.txt" in exported

"""ArchSpec: the published architectures load, round-trip, and invalid specs fail with clear errors."""
import copy
import os

import pytest
import yaml

from conftest import ALL_ARCHITECTURES
from mobiledets_tf.arch import ArchSpec, ArchSpecError, available_architectures, load_arch


def test_all_architectures_are_registered():
    assert set(ALL_ARCHITECTURES) <= set(available_architectures())


@pytest.mark.parametrize("name", ALL_ARCHITECTURES)
def test_yaml_and_json_round_trip(name, tmp_path):
    spec = load_arch(name)
    for suffix in ("yaml", "json"):
        path = str(tmp_path / f"{name}.{suffix}")
        spec.save(path)
        assert ArchSpec.load(path) == spec
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_batch_norm_epsilon_per_architecture_reaches_every_backbone_batch_norm():
    from mobiledets_tf.models.detector import build_ssdlite_model
    assert load_arch("mobiledet_cpu").batch_norm_epsilon == 0.01
    spec = load_arch("mobilenet_v2")
    assert spec.batch_norm_epsilon == 0.001 and "batch_norm_epsilon: 0.001" in spec.to_yaml()
    model = build_ssdlite_model(spec, num_classes=3, input_size=96)
    epsilons = {layer.name.split("_")[0]: layer.epsilon for layer in model.layers
                if layer.__class__.__name__ == "BatchNormalization"}
    assert epsilons["backbone"] == 0.001 and epsilons["extra1"] == 0.001
    assert {layer.epsilon for layer in model.layers
            if layer.name.startswith("backbone") and hasattr(layer, "epsilon")} == {0.001}


def test_yaml_writes_one_block_per_line(tmp_path):
    text = load_arch("mobiledet_edgetpu").to_yaml()
    block_lines = [l for l in text.splitlines() if l.startswith("- {")]
    assert len(block_lines) == 23
    assert block_lines[1] == ("- {type: tucker, kernel: 3, stride: 1, filters: 16, input_rank_ratio: 0.25, "
                              "output_rank_ratio: 0.75}")


def test_published_tables_facts():
    cpu = load_arch("mobiledet_cpu")
    assert cpu.activation == "hard_swish" and all(b.se == 0.25 for b in cpu.blocks[1:])
    assert not cpu.blocks[11].residual and cpu.blocks[12].residual
    assert [b.type for b in cpu.blocks[1:]] == ["ibn"] * 19
    gpu = load_arch("mobiledet_gpu")
    assert not gpu.blocks[14].residual and gpu.blocks[15].residual
    dsp = load_arch("mobiledet_dsp")
    assert all(b.kernel == 3 for b in dsp.blocks) and dsp.blocks[20].residual
    edgetpu = load_arch("mobiledet_edgetpu")
    assert edgetpu.blocks[6].kernel == 5 and edgetpu.blocks[6].type == "fused"
    for spec in (cpu, gpu, dsp, edgetpu):
        strides = spec.strides()
        assert strides[spec.endpoints["C4"].block] == 16 and strides[spec.endpoints["C5"].block] == 32
    assert load_arch("mobilenet_v2").endpoints["C4"].tensor == "expansion"


def test_load_by_path_and_unknown_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(load_arch("mobiledet_gpu").to_yaml())
    assert load_arch(str(path)).name == "mobiledet_gpu"
    with pytest.raises(ArchSpecError, match="unknown architecture 'mobiledet_tpu'.*mobiledet_cpu"):
        load_arch("mobiledet_tpu")
    with pytest.raises(ArchSpecError, match="cannot read"):
        load_arch(str(tmp_path / "missing.yaml"))


def _base():
    return load_arch("mobiledet_dsp").to_dict()


def _with_block(index, **fields):
    data = _base()
    data["blocks"][index] = {**data["blocks"][index], **fields}
    return data


def _without(key, block=None):
    data = _base()
    del (data if block is None else data["blocks"][block])[key]
    return data


INVALID = {
    "unknown top-level key": (dict(_base(), widths=[1]), r"unknown key 'widths'"),
    "unknown block type": (_with_block(3, type="mbconv"), r"block 3: unknown block type 'mbconv'"),
    "unknown block field": (_with_block(2, dilation=2), r"block 2 \(fused\): unknown field 'dilation'"),
    "field of another block type": (_with_block(5, expansion=4), r"block 5 \(tucker\): unknown field 'expansion'"),
    "even kernel": (_with_block(4, kernel=4), r"block 4 \(ibn\): field 'kernel' must be one of 1, 3, 5, 7, got 4"),
    "stride 3": (_with_block(6, stride=3), r"block 6 \(fused\): field 'stride' must be one of 1, 2, got 3"),
    "zero filters": (_with_block(7, filters=0), r"block 7 \(ibn\): field 'filters' must be > 0, got 0"),
    "negative filters": (_with_block(7, filters=-8), r"block 7 \(ibn\): field 'filters' must be > 0"),
    "filters as text": (_with_block(7, filters="64"), r"block 7 \(ibn\): field 'filters' must be an integer"),
    "missing expansion": (_without("expansion", block=8), r"block 8 \(fused\): missing field 'expansion'"),
    "zero expansion": (_with_block(8, expansion=0), r"block 8 \(fused\): field 'expansion' must be > 0"),
    "rank ratio above 1": (_with_block(5, input_rank_ratio=1.5), r"block 5 \(tucker\): field 'input_rank_ratio' must be <= 1"),
    "se ratio 1": (_with_block(4, se=1.0), r"block 4 \(ibn\): field 'se'"),
    "se on tucker": (_with_block(5, se=0.25), r"block 5 \(tucker\): unknown field 'se'"),
    "unknown activation": (_with_block(4, activation="gelu"), r"block 4 \(ibn\): unknown activation 'gelu'"),
    "residual as text": (_with_block(4, residual="yes"), r"block 4 \(ibn\): field 'residual' must be true or false"),
    "residual on stride 2": (_with_block(2, residual=True), r"block 2 \(fused\): field 'residual' is true but the block changes shape \(stride 2"),
    "residual on width change": (_with_block(14, residual=True), r"block 14 \(fused\): field 'residual' is true.*120->144 channels"),
    "missing C4": (dict(_base(), endpoints={"C5": 22}), r"missing endpoint C4"),
    "unknown endpoint": (dict(_base(), endpoints={"C4": 17, "C5": 22, "C6": 22}), r"unknown endpoint 'C6'"),
    "endpoint out of range": (dict(_base(), endpoints={"C4": 17, "C5": 30}), r"endpoint C5: block index 30 is out of range"),
    "endpoint at wrong stride": (dict(_base(), endpoints={"C4": 9, "C5": 22}), r"endpoint C4: must be at stride 16, but block 9's output is at stride 8"),
    "stride that breaks endpoints": (_with_block(14, stride=2), r"endpoint C4: must be at stride 16, but block 17's output is at stride 32"),
    "expansion endpoint of a tucker": (dict(_base(), endpoints={"C4": 17, "C5": "21/expansion"}), r"endpoint C5: block 21 \(tucker\) has no expansion"),
    "unknown endpoint tensor": (dict(_base(), endpoints={"C4": 17, "C5": "22/depthwise"}), r"endpoint C5: unknown tensor 'depthwise'"),
    "empty blocks": (dict(_base(), blocks=[]), r"'blocks' must be a non-empty list"),
    "blocks not a list": (dict(_base(), blocks={"0": 1}), r"'blocks' must be a non-empty list"),
    "missing name": (_without("name"), r"missing key 'name'"),
    "unknown se_gate": (dict(_base(), se_gate="softmax"), r"unknown se_gate 'softmax'"),
    "unknown se_width": (dict(_base(), se_width="round4"), r"unknown se_width 'round4'; expected one of round8, make_divisible, mnasnet"),
    "zero batch-norm epsilon": (dict(_base(), batch_norm_epsilon=0), r"field 'batch_norm_epsilon' must be > 0"),
    "not a mapping": ([1, 2], r"an architecture must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_specs_get_clear_errors(case):
    data, pattern = INVALID[case]
    with pytest.raises(ArchSpecError, match=pattern) as error:
        ArchSpec.from_dict(copy.deepcopy(data), source="bad.yaml")
    assert str(error.value).startswith("bad.yaml")


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nblocks: [\n")
    with pytest.raises(ArchSpecError, match=r"broken.yaml: not valid YAML"):
        ArchSpec.load(str(path))


def test_error_in_a_file_names_the_file(tmp_path):
    data = _with_block(4, kernel=2)
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ArchSpecError, match=r"custom.yaml: block 4 \(ibn\): field 'kernel'"):
        load_arch(str(path))

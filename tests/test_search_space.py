"""Search spaces as data: the paper spaces load with the sizes computed by hand, choice indices and
ArchSpecs round-trip, the published MobileDets are (or are not) points of the spaces, platform
adaptations hold, cost-model features are exact one-hots with exact expectations, bad files fail
naming file and field, and sampled architectures build and run as Keras detectors.

The default skeletons (configs/search_spaces/mobiledets.yaml) are the published MobileDets' own, one
per platform, so these reproduce published models exactly: MobileDet-CPU in ibn/cpu, ibn_fused/cpu
and ibn_fused_tucker/cpu; MobileDet-EdgeTPU, -DSP and -GPU in ibn_fused_tucker on their platform.
"""
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mobiledets_tf.arch import ArchSpec, load_arch
from mobiledets_tf.search.space import SearchSpaceError, available_spaces, from_json, load_space

SPACES = ("ibn", "ibn_fused", "ibn_fused_tucker")
PLATFORMS = ("cpu", "edgetpu", "dsp", "gpu")

# Layers per skeleton (block 0 is the fixed stem conv, block 1 the "first" group, the rest "body"):
#   CPU:             1 first + body 1 + 4 + 4 + 4 + 4 + 1 = 18   (20 blocks)
#   EdgeTPU/DSP/GPU: 1 first + body 4 + 4 + 4 + 4 + 4 + 1 = 21   (23 blocks)
# Op choices (first, body):
#   ibn:              first ibn k{3,5} e1 = 2;            body ibn k{3,5} x e{4,8} = 4
#   ibn_fused:        first 2;                            body 4 ibn + 4 fused = 8
#   ibn_fused_tucker: first 2 + tucker r{.25,.75}^2 = 6;  body 8 + 4 tucker = 12
#   dsp keeps kernel 3 only: ibn first 1 (fixed), body 2; ibn_fused first 1, body 4;
#                            ibn_fused_tucker first 1 + 4 = 5, body 2 + 2 + 4 = 8
# size = first * body ** n_body; decisions = searchable layers; features = sum of choices over them.
EXPECTED = {  # (space, platform): (size, decisions, feature length)
    ("ibn", "cpu"): (2 * 4 ** 18, 19, 2 + 18 * 4),
    ("ibn", "edgetpu"): (2 * 4 ** 21, 22, 2 + 21 * 4),
    ("ibn", "dsp"): (1 * 2 ** 21, 21, 21 * 2),
    ("ibn", "gpu"): (2 * 4 ** 21, 22, 2 + 21 * 4),
    ("ibn_fused", "cpu"): (2 * 8 ** 18, 19, 2 + 18 * 8),
    ("ibn_fused", "edgetpu"): (2 * 8 ** 21, 22, 2 + 21 * 8),
    ("ibn_fused", "dsp"): (1 * 4 ** 21, 21, 21 * 4),
    ("ibn_fused", "gpu"): (2 * 8 ** 21, 22, 2 + 21 * 8),
    ("ibn_fused_tucker", "cpu"): (6 * 12 ** 18, 19, 6 + 18 * 12),
    ("ibn_fused_tucker", "edgetpu"): (6 * 12 ** 21, 22, 6 + 21 * 12),
    ("ibn_fused_tucker", "dsp"): (5 * 8 ** 21, 22, 5 + 21 * 8),
    ("ibn_fused_tucker", "gpu"): (6 * 12 ** 21, 22, 6 + 21 * 12),
}

# A user space that also searches widths. Widths round8(filters * m): stage0 {8, 16},
# stage1 {24, 48}, stage3 {24, 48, 72}. Body ops: ibn k3 e3, ibn k3 e6, fused k3 e4, fused k5 e4.
# Decisions: stage0/width(2) stage1/width(2) layer1/op(4) layer2/op(4) layer3/op(4)
#            stage3/width(3) layer4/op(4) layer5/op(4) layer6/op(4)
CUSTOM = """
description: a tiny space searching widths
skeletons:
  tiny:
    - {stride: 2, filters: 16, ops: [{type: conv, kernel: 3}], filter_multipliers: [0.5, 1.0]}  # 0
    - {stride: 2, filters: 24, layers: 2, filter_multipliers: [1.0, 2.0], endpoint: C2}          # 1-2
    - {stride: 2, filters: 32, endpoint: C3}                                                   # 3
    - {stride: 2, filters: 48, layers: 2, filter_multipliers: [0.5, 1.0, 1.5], endpoint: C4}   # 4-5
    - {stride: 2, filters: 64, endpoint: C5}                                                   # 6
spaces:
  mine:
    ops:
      body:
        - {type: ibn, kernel: 3, expansion: [3, 6]}
        - {type: fused, kernel: [3, 5], expansion: 4}
platforms:
  laptop: {skeleton: tiny, activation: relu}
  nofive: {skeleton: tiny, activation: relu6, kernels: [3]}
"""
CUSTOM_SIZE = 2 * 2 * 4 * 4 * 4 * 3 * 4 * 4 * 4
# Feature groups: layer0 out(2); layer1 in(2) x out(2) x op(4); layer2 in=out(2) x op(4);
# layer3 in(2) x op(4); layer4 out(3) x op(4); layer5 in=out(3) x op(4); layer6 in(3) x op(4).
CUSTOM_FEATURES = 2 + 2 * 2 * 4 + 2 * 4 + 2 * 4 + 3 * 4 + 3 * 4 + 3 * 4


@pytest.fixture
def custom_path(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text(CUSTOM)
    return str(path)


def test_available_spaces():
    assert set(SPACES) <= set(available_spaces())


@pytest.mark.parametrize("space,platform", sorted(EXPECTED))
def test_paper_spaces_load_with_hand_computed_sizes(space, platform):
    s = load_space(space, platform)
    size, decisions, num_features = EXPECTED[space, platform]
    assert s.size == size and isinstance(s.size, int)
    assert len(s.decisions) == decisions
    assert len(s.cost_features.of(s.sample(0))) == num_features == len(s.cost_features.names())
    assert s.skeleton == f"mobiledet_{platform}"
    assert all(tag.startswith("layer") and tag.endswith("/op") for tag, _ in s.decisions)


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_samples_round_trip_and_validate(space, platform):
    s = load_space(space, platform)
    for seed in range(40):
        indices = s.sample(seed)
        arch = s.to_arch_spec(indices, name=f"sample{seed}")
        assert ArchSpec.from_dict(arch.to_dict()) == arch  # a valid ArchSpec
        assert arch.name == f"sample{seed}"
        assert s.indices_of(arch) == indices
        assert len(s.describe(indices).splitlines()) == len(arch.blocks)


def test_sample_round_trips_through_yaml_and_json_files(tmp_path):
    s = load_space("ibn_fused_tucker", "gpu")
    for seed, suffix in ((3, "yaml"), (4, "json")):
        indices = s.sample(np.random.default_rng(seed))
        path = str(tmp_path / f"arch.{suffix}")
        s.to_arch_spec(indices).save(path)
        assert s.indices_of(ArchSpec.load(path)) == indices


# Indices written by hand from the reference tables. ibn_fused_tucker choice orders:
#   first: 0 ibn k3 e1, 1 ibn k5 e1, 2 tucker r.25/.25, 3 r.25/.75, 4 r.75/.25, 5 r.75/.75
#   body:  0 ibn k3e4, 1 k3e8, 2 k5e4, 3 k5e8, 4 fused k3e4, 5 k3e8, 6 k5e4, 7 k5e8,
#          8 tucker r.25/.25, 9 r.25/.75, 10 r.75/.25, 11 r.75/.75
# ibn: first 0 k3 e1, 1 k5 e1; body 0 k3e4, 1 k3e8, 2 k5e4, 3 k5e8.
# dsp (kernel 3 only) ibn_fused_tucker: first 0 ibn k3 e1, 1..4 tucker as above;
#   body 0 ibn e4, 1 ibn e8, 2 fused e4, 3 fused e8, 4..7 tucker r.25/.25, .25/.75, .75/.25, .75/.75
PUBLISHED_INDICES = {
    ("mobiledet_edgetpu", "ibn_fused_tucker", "edgetpu"):
        [3, 5, 4, 5, 4, 7, 4, 4, 4, 1, 1, 4, 4, 3, 3, 1, 1, 3, 1, 2, 1, 3],
    ("mobiledet_cpu", "ibn", "cpu"):
        [0, 0, 1, 0, 0, 0, 3, 1, 2, 0, 1, 1, 1, 1, 3, 2, 2, 0, 1],
    ("mobiledet_cpu", "ibn_fused_tucker", "cpu"):
        [0, 0, 1, 0, 0, 0, 3, 1, 2, 0, 1, 1, 1, 1, 3, 2, 2, 0, 1],
    ("mobiledet_dsp", "ibn_fused_tucker", "dsp"):
        [0, 2, 2, 0, 5, 3, 0, 2, 2, 3, 0, 1, 1, 3, 1, 1, 1, 0, 0, 2, 7, 1],
    ("mobiledet_gpu", "ibn_fused_tucker", "gpu"):
        [2, 5, 8, 8, 8, 5, 5, 5, 4, 5, 4, 4, 4, 5, 5, 5, 5, 4, 4, 4, 4, 1],
}


@pytest.mark.parametrize("arch,space,platform", sorted(PUBLISHED_INDICES))
def test_published_mobiledets_are_points_of_their_spaces(arch, space, platform):
    published = load_arch(arch)
    s = load_space(space, platform)
    indices = s.indices_of(published)
    assert indices == PUBLISHED_INDICES[arch, space, platform]
    rebuilt = s.to_arch_spec(indices)
    assert rebuilt.blocks == published.blocks
    assert rebuilt.endpoints == published.endpoints
    assert rebuilt.activation == published.activation


def test_mobiledet_cpu_is_in_ibn_fused_cpu():
    assert load_space("ibn_fused", "cpu").indices_of(load_arch("mobiledet_cpu")) == \
        PUBLISHED_INDICES["mobiledet_cpu", "ibn", "cpu"]


@pytest.mark.parametrize("arch,space,platform,skeleton,reason", [
    ("mobiledet_edgetpu", "ibn_fused", "edgetpu", None, "block 1 (tucker) is 'tucker k3 r0.25/0.75'"),
    ("mobiledet_edgetpu", "ibn", "edgetpu", None, "block 1 (tucker)"),
    ("mobiledet_dsp", "ibn_fused", "dsp", None, "block 5 (tucker)"),
    ("mobiledet_gpu", "ibn_fused", "gpu", None, "block 1 (tucker)"),
    ("mobiledet_edgetpu", "ibn_fused_tucker", "dsp", "mobiledet_edgetpu", "block 6 (fused) is 'fused k5 e8'"),
    ("mobiledet_dsp", "ibn_fused_tucker", "edgetpu", None, "block 1 (ibn) has 24 filters"),
    ("mobiledet_gpu", "ibn_fused_tucker", "edgetpu", None, "block 2 (fused) has 32 filters"),
    ("mobiledet_cpu", "ibn", "edgetpu", None, "it has 20 blocks, the skeleton has 23"),
    ("mobiledet_edgetpu", "ibn_fused_tucker", "cpu", "mobiledet_edgetpu", "activation is relu6"),
    ("mobilenet_v2", "ibn", "edgetpu", None, "is not in search space ibn/edgetpu"),
])
def test_architectures_outside_a_space_are_rejected_with_the_reason(arch, space, platform, skeleton, reason):
    s = load_space(space, platform, skeleton=skeleton)
    with pytest.raises(SearchSpaceError, match="is not in search space") as e:
        s.indices_of(load_arch(arch))
    assert reason in str(e.value)


def test_gpu_block_14_shortcut_is_checked():
    gpu = load_arch("mobiledet_gpu")
    data = gpu.to_dict()
    data["blocks"][14]["residual"] = True
    with pytest.raises(SearchSpaceError, match="block 14 .* residual true"):
        load_space("ibn_fused_tucker", "gpu").indices_of(ArchSpec.from_dict(data))


@pytest.mark.parametrize("space", SPACES)
def test_dsp_never_has_5x5_kernels(space):
    s = load_space(space, "dsp")
    assert all(c.kernel == 3 for layer in s.layers for c in layer.ops)
    rng = np.random.default_rng(0)
    for _ in range(100):
        arch = s.to_arch_spec(s.sample(rng))
        assert {b.kernel for b in arch.blocks} == {3}
    assert load_space(space, "edgetpu").layers[5].ops != s.layers[5].ops  # the 5x5s are gone


@pytest.mark.parametrize("space", SPACES)
def test_cpu_always_has_se_and_hard_swish_others_relu6_without_se(space):
    rng = np.random.default_rng(1)
    for platform in PLATFORMS:
        s = load_space(space, platform)
        for _ in range(30):
            arch = s.to_arch_spec(s.sample(rng))
            assert arch.activation == ("hard_swish" if platform == "cpu" else "relu6")
            assert all(b.activation is None for b in arch.blocks)
            for b in arch.blocks:
                if b.type in ("ibn", "fused"):
                    assert b.se == (0.25 if platform == "cpu" else 0.0)
                else:
                    assert b.se == 0.0


def _groups(space):
    """Feature slices per layer, from the feature names (`layerN ...`)."""
    names = [n.split(" ", 1)[0] for n in space.cost_features.names()]
    return {layer: [i for i, n in enumerate(names) if n == layer] for layer in dict.fromkeys(names)}


@pytest.mark.parametrize("space,platform", [("ibn_fused_tucker", "edgetpu"), ("ibn", "dsp"),
                                            ("ibn_fused", "cpu")])
def test_features_are_one_hot_per_searchable_layer(space, platform):
    s = load_space(space, platform)
    groups = _groups(s)
    size, decisions, num_features = EXPECTED[space, platform]
    # Without width choices every searchable layer is one group: its op decision.
    assert len(groups) == decisions
    for seed in range(10):
        f = s.cost_features.of(s.sample(seed))
        assert f.shape == (num_features,) and set(np.unique(f)) <= {0.0, 1.0}
        assert [f[g].sum() for g in groups.values()] == [1.0] * len(groups)


def test_published_edgetpu_features_by_hand():
    s = load_space("ibn_fused_tucker", "edgetpu")
    f = s.cost_features.of(PUBLISHED_INDICES["mobiledet_edgetpu", "ibn_fused_tucker", "edgetpu"])
    # layer1 has 6 features (choice 3), then 21 layers of 12: layer2 choice 5 -> 6 + 5.
    assert np.flatnonzero(f)[:3].tolist() == [3, 6 + 5, 6 + 12 + 4]
    assert s.cost_features.names()[3] == "layer1 op=tucker k3 r0.25/0.75"
    assert s.cost_features.names()[6 + 12 * 4 + 7] == "layer6 op=fused k5 e8"


def test_custom_space_with_width_choices(custom_path):
    s = load_space(custom_path, "laptop")
    assert [tag for tag, _ in s.decisions] == [
        "stage0/width", "stage1/width", "layer1/op", "layer2/op", "layer3/op",
        "stage3/width", "layer4/op", "layer5/op", "layer6/op"]
    assert s.size == CUSTOM_SIZE == 49152
    assert len(s.cost_features.names()) == CUSTOM_FEATURES == 70
    # stage0 -> 16, stage1 -> 48, layer1 fused k3 e4, layer2 ibn k3 e6, layer3 fused k5 e4,
    # stage3 -> 72, layer4 ibn k3 e3, layer5 fused k3 e4, layer6 ibn k3 e6
    indices = [1, 1, 2, 1, 3, 2, 0, 2, 1]
    arch = s.to_arch_spec(indices)
    assert [b.filters for b in arch.blocks] == [16, 48, 48, 32, 72, 72, 64]
    assert [b.residual for b in arch.blocks] == [False, False, True, False, False, True, False]
    assert [b.type for b in arch.blocks] == ["conv", "fused", "ibn", "fused", "ibn", "fused", "ibn"]
    assert arch.activation == "relu" and s.indices_of(arch) == indices
    f = s.cost_features.of(indices)
    assert len(f) == 70 and f.sum() == 7  # one group per layer, the stem included (its width varies)
    # layer1 group starts after layer0's 2 features; joint (in 16: 1, out 48: 1, op 2) -> (1*2+1)*4+2
    assert f[2 + 14] == 1 and f[2:18].sum() == 1
    assert s.cost_features.names()[2 + 14] == "layer1 in=16 out=48 op=fused k3 e4"
    # layer2 reads and writes the same decision: 2 x 4 features starting at 2 + 16
    assert s.cost_features.names()[18:20] == ["layer2 in=out=24 op=ibn k3 e3", "layer2 in=out=24 op=ibn k3 e6"]
    for seed in range(30):
        sample = s.sample(seed)
        assert s.indices_of(s.to_arch_spec(sample)) == sample


def test_widths_must_agree_within_a_stage(custom_path):
    s = load_space(custom_path, "laptop")
    data = s.to_arch_spec([1, 1, 2, 1, 3, 2, 0, 2, 1]).to_dict()
    data["blocks"][2].update(filters=24, residual=False)  # stage 1 would be 48 then 24
    with pytest.raises(SearchSpaceError, match="block 2 width 24 disagrees .* stage1/width"):
        s.indices_of(ArchSpec.from_dict(data))


def test_platform_kernel_filter_in_a_user_space(custom_path):
    s = load_space(custom_path, "nofive")
    assert [c.label for c in s.decisions[2].choices] == ["ibn k3 e3", "ibn k3 e6", "fused k3 e4"]
    assert s.size == 2 * 2 * 3 ** 3 * 3 * 3 ** 3


def _all_combinations_mean(s, probabilities):
    support = [np.flatnonzero(p) for p in probabilities]
    total, count = 0, 0
    for combo in itertools.product(*support):
        weight = np.prod([p[i] for p, i in zip(probabilities, combo)])
        total = total + weight * s.cost_features.of(list(combo))
        count += 1
    return total, count


def test_expected_features_exact_cases(custom_path):
    s = load_space(custom_path, "laptop")
    indices = [1, 0, 3, 2, 1, 2, 0, 1, 3]
    one_hot = [np.eye(len(c))[i] for (_, c), i in zip(s.decisions, indices)]
    np.testing.assert_array_equal(s.cost_features.expected(one_hot), s.cost_features.of(indices))
    # Uniform over the first two choices of stage1/width, layer1/op and layer2/op, one-hot elsewhere:
    # the expectation is the plain average over the 2 * 2 * 2 architectures.
    mixed = list(one_hot)
    for d in (1, 2, 3):
        mixed[d] = np.zeros(len(s.decisions[d].choices))
        mixed[d][:2] = 0.5
    mean, count = _all_combinations_mean(s, mixed)
    assert count == 8
    np.testing.assert_allclose(s.cost_features.expected(mixed), mean, atol=1e-12)
    # layer2 reads and writes stage1/width: a joint (in=24, out=48) never occurs, so the
    # expectation is p(width) * p(op), not p(width)^2 * p(op).
    names = s.cost_features.names()
    assert s.cost_features.expected(mixed)[names.index("layer2 in=out=24 op=ibn k3 e3")] == pytest.approx(0.25)


@pytest.mark.parametrize("which", ["custom", "ibn_fused_tucker/edgetpu"])
def test_expected_features_match_monte_carlo(which, custom_path):
    s = load_space(custom_path, "laptop") if which == "custom" else load_space("ibn_fused_tucker", "edgetpu")
    rng = np.random.default_rng(7)
    probabilities = [rng.dirichlet(np.ones(len(c))) for _, c in s.decisions]
    n = 6000
    draws = np.stack([rng.choice(len(p), size=n, p=p) for p in probabilities], axis=1)
    estimate = np.mean([s.cost_features.of(row.tolist()) for row in draws], axis=0)
    expected = s.cost_features.expected(probabilities)
    assert expected.shape == estimate.shape
    # Standard error <= 0.5 / sqrt(6000) ~ 0.0065; allow 5 of them.
    assert np.max(np.abs(expected - estimate)) < 0.033
    groups = _groups(s)
    np.testing.assert_allclose([expected[g].sum() for g in groups.values()], 1.0)


def test_expected_features_rejects_bad_probabilities():
    s = load_space("ibn", "edgetpu")
    uniform = [np.full(len(c), 1 / len(c)) for _, c in s.decisions]
    with pytest.raises(SearchSpaceError, match="expected 22 probability vectors"):
        s.cost_features.expected(uniform[:-1])
    bad = list(uniform)
    bad[3] = np.array([0.5, 0.5, 0.5, -0.5])
    with pytest.raises(SearchSpaceError, match="layer4/op"):
        s.cost_features.expected(bad)


def test_bad_indices_name_the_decision():
    s = load_space("ibn", "edgetpu")
    with pytest.raises(SearchSpaceError, match="expected 22 choice indices, got 3"):
        s.to_arch_spec([0, 0, 0])
    indices = [0] * 22
    indices[5] = 4
    with pytest.raises(SearchSpaceError, match=r"layer6/op: index must be an int in 0\.\.3, got 4"):
        s.to_arch_spec(indices)


def test_json_round_trip_and_stale_record(custom_path):
    for s in (load_space("ibn_fused_tucker", "dsp"), load_space(custom_path, "laptop")):
        indices = s.sample(11)
        text = s.to_json(indices)
        data = json.loads(text)
        assert data["space"] == s.name and data["platform"] == s.platform and data["indices"] == indices
        loaded, loaded_indices = from_json(text)
        assert loaded_indices == indices
        assert loaded.to_arch_spec(loaded_indices) == s.to_arch_spec(indices)
    data["choices"]["layer1/op"] = "ibn k9 e1"
    with pytest.raises(SearchSpaceError, match="layer1/op was 'ibn k9 e1' when recorded"):
        from_json(data)


def _mutate(path, edit):
    data = yaml.safe_load(open(path))
    edit(data)
    with open(path, "w") as f:
        yaml.safe_dump(data, f)


@pytest.mark.parametrize("edit,fragments", [
    (lambda d: d["skeletons"]["tiny"][1].update(stirde=2), ["skeletons.tiny[1]", "unknown key 'stirde'"]),
    (lambda d: d["spaces"]["mine"]["ops"]["body"][1].update(kernel=[3, 4]),
     ["spaces.mine.ops.body[1]", "field 'kernel' must be one of 1, 3, 5, 7, got 4"]),
    (lambda d: d["skeletons"]["tiny"][2].pop("filters"), ["skeletons.tiny[2]", "missing field 'filters'"]),
    (lambda d: d["spaces"]["mine"]["ops"]["body"][0].pop("expansion"),
     ["spaces.mine.ops.body[0]", "missing field 'expansion'"]),
    (lambda d: d["spaces"]["mine"]["ops"]["body"][0].update(input_rank_ratio=0.5),
     ["spaces.mine.ops.body[0]", "unknown key 'input_rank_ratio'"]),
    (lambda d: d["spaces"]["mine"]["ops"]["body"][0].update(type="mbconv"),
     ["spaces.mine.ops.body[0]", "unknown block type 'mbconv'"]),
    (lambda d: d.update(platform={}), ["unknown key 'platform'"]),
    (lambda d: d["platforms"]["laptop"].update(skeleton="huge"), ["platforms.laptop", "unknown skeleton 'huge'"]),
    (lambda d: d["platforms"]["laptop"].update(activation="gelu"), ["platforms.laptop", "activation"]),
    (lambda d: d["platforms"]["laptop"].update(block_fields={"tucker": {"se": 0.25}}),
     ["platforms.laptop.block_fields.tucker", "unknown key 'se'"]),
    (lambda d: d["skeletons"]["tiny"][0].update(filter_multipliers=[1.0, 1.1]),
     ["skeletons.tiny[0]", "filter_multipliers"]),
    (lambda d: d["skeletons"]["tiny"][2].update(ops="head"), ["skeletons.tiny[2]", "ops group 'head'"]),
    (lambda d: d["skeletons"]["tiny"][3].update(stride=1), ["endpoint C4", "stride 16"]),
    (lambda d: d["skeletons"]["tiny"][4].update(endpoint="C4"), ["skeletons.tiny", "endpoint C4 is given to 2"]),
    (lambda d: d["platforms"]["laptop"].update(kernels=[7]),
     ["skeletons.tiny[0].ops", "no op choice is left on platform laptop (kernels [7])"]),
])
def test_bad_space_files_name_file_and_field(custom_path, edit, fragments):
    _mutate(custom_path, edit)
    with pytest.raises(SearchSpaceError) as e:
        load_space(custom_path, "laptop")
    message = str(e.value)
    assert message.startswith(custom_path)
    for fragment in fragments:
        assert fragment in message, message


def test_unknown_names(custom_path):
    with pytest.raises(SearchSpaceError, match="unknown search space 'ibn_tucker'.*ibn_fused_tucker"):
        load_space("ibn_tucker", "cpu")
    with pytest.raises(SearchSpaceError, match="unknown platform 'tpu'.*cpu, edgetpu, dsp, gpu"):
        load_space("ibn", "tpu")
    with pytest.raises(SearchSpaceError, match="unknown skeleton 'mobiledet_npu'"):
        load_space("ibn", "cpu", skeleton="mobiledet_npu")
    with open(custom_path, "w") as f:
        f.write("skeletons: [\n")
    with pytest.raises(SearchSpaceError, match="not valid YAML"):
        load_space(custom_path, "laptop")


def test_sampled_architectures_build_and_run_as_detectors():
    from mobiledets_tf.models.detector import SSDLiteDetector
    for space, platform, seed in (("ibn_fused_tucker", "edgetpu", 5), ("ibn_fused_tucker", "cpu", 6)):
        s = load_space(space, platform)
        arch = s.to_arch_spec(s.sample(seed), name=f"sampled_{platform}")
        detector = SSDLiteDetector(arch, num_classes=6, input_size=64, depth_multiplier=0.25)
        images = np.random.default_rng(seed).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
        boxes, classes = detector.model(detector.preprocess(images), training=False)[:2]
        assert boxes.shape == (1, len(detector.anchors), 4)
        assert classes.shape == (1, len(detector.anchors), 7)
        assert np.all(np.isfinite(boxes.numpy())) and np.all(np.isfinite(classes.numpy()))


def test_unknown_space_without_shipped_files_names_the_folder(tmp_path):
    code = ("from mobiledets_tf.search.space import SearchSpaceError, load_space\n"
            "try:\n    load_space('ibn', 'cpu')\nexcept SearchSpaceError as e:\n    print(e)\n")
    env = {**os.environ, "MOBILEDETS_SEARCH_SPACES_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"unknown search space 'ibn': not a file, and not one of (no files in {tmp_path})" in result.stdout

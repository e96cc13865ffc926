"""The TuNAS controller: uniform start, sampling, REINFORCE with the bias-corrected baseline, the
RL learning-rate schedule, warmups, the absolute and MnasNet rewards, and checkpoint round trips."""
import numpy as np
import pytest
import tensorflow as tf

from mobiledets_tf.search.choices import WidthChoice
from mobiledets_tf.search.controller import ALL_OPS, Controller, rl_learning_rate, warmup_probability
from mobiledets_tf.search.rewards import reward
from mobiledets_tf.search.space import load_space


@pytest.fixture(scope="module")
def space():
    return load_space("ibn_fused_tucker", "edgetpu")


def test_starts_uniform_and_samples_every_choice(space):
    controller = Controller(space)
    for p, d in zip(controller.probabilities(), space.decisions):
        assert np.allclose(p, 1 / len(d.choices))
    rng = np.random.default_rng(0)
    draws = np.array([controller.sample(rng) for _ in range(600)])
    for d, decision in enumerate(space.decisions):
        counts = np.bincount(draws[:, d], minlength=len(decision.choices))
        assert counts.min() > 0.4 * 600 / len(decision.choices)
    assert controller.sample(np.random.default_rng(5)) == controller.sample(np.random.default_rng(5))
    indices = draws[0].tolist()
    expected = sum(np.log(1 / len(d.choices)) for d in space.decisions)
    assert float(controller.log_prob(indices)) == pytest.approx(expected, rel=1e-5)
    assert controller.log_prob(draws[:3]).shape == (3,)


def test_reinforce_moves_probability_to_the_rewarded_choice(space):
    controller = Controller(space)
    rng = np.random.default_rng(1)
    for _ in range(150):
        samples = [controller.sample(rng) for _ in range(2)]
        rewards = [1.0 if s[3] == 2 else 0.0 for s in samples]
        controller.update(samples, rewards, learning_rate=0.05)
    assert controller.probabilities()[3][2] > 0.9
    assert controller.argmax()[3] == 2


def test_baseline_is_a_bias_corrected_moving_average(space):
    controller = Controller(space, baseline_momentum=0.9)
    sample = [0] * len(space.decisions)
    first = controller.update([sample], [2.0], learning_rate=0.0)
    assert first["baseline"] == pytest.approx(2.0) and first["advantage"] == pytest.approx(0.0)
    second = controller.update([sample], [4.0], learning_rate=0.0)
    # EMA: 0.9 * (0.1 * 2) + 0.1 * 4 = 0.58, corrected by 1 - 0.9^2 = 0.19
    assert second["baseline"] == pytest.approx(0.58 / 0.19, rel=1e-5)
    assert second["advantage"] == pytest.approx(4.0 - 2.0)
    # A zero learning rate leaves the logits alone.
    assert all(np.allclose(l.numpy(), 0.0) for l in controller.logits)


def test_no_gradient_without_advantage(space):
    controller = Controller(space)
    sample = controller.sample(np.random.default_rng(0))
    controller.update([sample], [1.0], learning_rate=0.1)          # first update: advantage 0
    assert all(np.allclose(l.numpy(), 0.0) for l in controller.logits)
    controller.update([sample], [3.0], learning_rate=0.1)          # positive advantage
    for d, l in enumerate(controller.logits):
        assert int(np.argmax(l.numpy())) == sample[d]


def test_rl_learning_rate_schedule():
    assert rl_learning_rate(0, 100, 1e-3) == 0.0
    assert rl_learning_rate(24, 100, 1e-3) == 0.0
    assert rl_learning_rate(25, 100, 1e-3) == pytest.approx(1e-3)
    assert rl_learning_rate(99, 100, 1e-3) == pytest.approx(1e-2)
    middle = rl_learning_rate(62, 100, 1e-3)
    assert middle == pytest.approx(1e-3 * 10 ** ((62 - 25) / 74))


def test_warmup_probability_and_choices(space):
    assert warmup_probability(0, 100) == 1.0
    assert warmup_probability(10, 100) == pytest.approx(0.6)
    assert warmup_probability(25, 100) == 0.0 and warmup_probability(80, 100) == 0.0
    controller = Controller(space)
    sample = controller.sample(np.random.default_rng(0))
    assert controller.warmup_choices(sample, 0.0, np.random.default_rng(0)) == sample
    assert controller.warmup_choices(sample, 1.0, np.random.default_rng(0)) == [ALL_OPS] * len(sample)
    mixed = controller.warmup_choices(sample, 0.5, np.random.default_rng(0))
    assert set(mixed) - set(sample) <= {ALL_OPS} and ALL_OPS in mixed and any(m != ALL_OPS for m in mixed)


def test_width_decisions_warm_up_to_the_widest(tmp_path):
    spaces = tmp_path / "spaces.yaml"
    spaces.write_text("""
skeletons:
  tiny:
    - {stride: 2, filters: 16, ops: [{type: conv, kernel: 3}]}
    - {stride: 2, filters: 32, layers: 2, endpoint: C2, filter_multipliers: [0.5, 1.0, 0.75]}
    - {stride: 2, filters: 40, endpoint: C3}
    - {stride: 2, filters: 80, endpoint: C4}
    - {stride: 2, filters: 96, endpoint: C5}
spaces:
  small:
    ops:
      body: [{type: ibn, kernel: [3, 5], expansion: 4}]
platforms:
  edgetpu: {skeleton: tiny, activation: relu6}
""")
    space = load_space(str(spaces), "edgetpu")
    controller = Controller(space)
    choices = controller.warmup_choices([0] * len(space.decisions), 1.0, np.random.default_rng(0))
    for decision, choice in zip(space.decisions, choices):
        if isinstance(decision.choices[0], WidthChoice):
            assert decision.choices[choice].multiplier == 1.0
        else:
            assert choice == ALL_OPS


def test_absolute_reward():
    assert reward("absolute", 0.5, 10.0, 10.0) == pytest.approx(0.5)
    assert reward("absolute", 0.5, 11.0, 10.0) == pytest.approx(0.49)
    assert reward("absolute", 0.5, 9.0, 10.0) == pytest.approx(0.49)
    assert reward("absolute", 0.5, 20.0, 10.0, beta=-0.5) == pytest.approx(0.0)


def test_mnasnet_rewards():
    # Soft: Q * (T / T0) ** -0.07 on both sides: twice the target costs 4.7%, half of it gains 5.0%.
    assert reward("mnas_soft", 0.5, 20.0, 10.0) == pytest.approx(0.5 * 2 ** -0.07)
    assert reward("mnas_soft", 0.5, 5.0, 10.0) == pytest.approx(0.5 * 0.5 ** -0.07)
    assert reward("mnas_soft", 0.5, 5.0, 10.0, exponent=-0.5) == pytest.approx(0.5 * 2 ** 0.5)
    # Hard: Q within the budget, Q * T0 / T above it.
    assert reward("mnas_hard", 0.5, 4.0, 10.0) == pytest.approx(0.5)
    assert reward("mnas_hard", 0.5, 10.0, 10.0) == pytest.approx(0.5)
    assert reward("mnas_hard", 0.5, 12.5, 10.0) == pytest.approx(0.4)
    assert reward("mnas_soft", 0.0, 3.0, 10.0) == 0.0     # no quality, no signal
    with pytest.raises(ValueError, match="unknown reward 'mnas'"):
        reward("mnas", 0.5, 10.0, 10.0)
    with pytest.raises(ValueError, match="latencies must be positive"):
        reward("mnas_soft", 0.5, 0.0, 10.0)


def test_checkpoint_round_trip(space, tmp_path):
    controller = Controller(space)
    rng = np.random.default_rng(2)
    for _ in range(5):
        sample = controller.sample(rng)
        controller.update([sample], [float(rng.random())], learning_rate=0.05)
    path = tf.train.Checkpoint(**controller.checkpoint_items()).write(str(tmp_path / "ckpt"))
    restored = Controller(space)
    tf.train.Checkpoint(**restored.checkpoint_items()).read(path).assert_consumed()
    for a, b in zip(controller.logits, restored.logits):
        assert np.array_equal(a.numpy(), b.numpy())
    assert restored.baseline_value() == pytest.approx(controller.baseline_value())
    assert int(restored.updates.numpy()) == 5
    # The optimizer's slots came back too: the next update is identical.
    sample = controller.sample(np.random.default_rng(9))
    controller.update([sample], [0.7], learning_rate=0.05)
    restored.update([sample], [0.7], learning_rate=0.05)
    for a, b in zip(controller.logits, restored.logits):
        assert np.allclose(a.numpy(), b.numpy())


def test_update_checks_its_inputs(space):
    with pytest.raises(ValueError, match="2 samples and 1 rewards"):
        Controller(space).update([[0] * len(space.decisions)] * 2, [1.0], learning_rate=0.1)

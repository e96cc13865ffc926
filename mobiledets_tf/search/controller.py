"""The TuNAS controller: one categorical distribution per search decision, trained with REINFORCE.

- Logits start at zero (uniform); `sample` draws an architecture (a choice index per decision) with
  a numpy generator, so that every replica of a distributed search draws its own from a seed of
  (search seed, step, replica) and a resumed search draws the same ones again.
- Reward (`rewards.reward`, `search.reward`): by default TuNAS' `R = Q + beta * |T(a) / T0 - 1|`, Q the
  detection quality of the sampled architecture, T its latency from the cost model, T0 the target,
  beta < 0; or MnasNet's `Q * (T / T0) ** w` (soft or hard). The controller only sees R.
- Baseline: exponential moving average of the reward (momentum 0.95), bias-corrected as Adam's
  moments are; the policy loss is `-stop_gradient(R - baseline) * log p(a)`, averaged over the
  architectures of one step (one per replica).
- Adam with beta1 = 0, beta2 = 0.999. The RL learning rate is 0 for the first `rl_delay` share of
  the steps, then rises exponentially to `rl_boost` times the base rate at the last step
  (`rl_learning_rate`).
- Warmups (`warmup_probability`): for the first `warmup` share of the steps an op decision is
  replaced, with a probability falling linearly from 1 to 0, by "run every op and average" (-1 for
  the supernet), and a width decision by its widest choice. Such samples send no gradient to the
  logits (`update` skips them).
All state (logits, optimizer slots, baseline) is in tf.Variables, saved with the search checkpoint.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from mobiledets_tf.keras import keras
from mobiledets_tf.search.choices import WidthChoice
from mobiledets_tf.search.space import SearchSpace
from mobiledets_tf.search.supernet import WARMUP as ALL_OPS   # every op of the layer, averaged


def rl_learning_rate(step: int, total_steps: int, base: float, rl_delay: float = 0.25,
                     rl_boost: float = 10.0) -> float:
    """0 before `rl_delay * total_steps`, then `base * rl_boost ** progress` (progress 0 -> 1)."""
    start = int(rl_delay * total_steps)
    if step < start:
        return 0.0
    progress = (step - start) / max(total_steps - 1 - start, 1)
    return base * rl_boost ** min(progress, 1.0)


def warmup_probability(step: int, total_steps: int, warmup: float = 0.25) -> float:
    """Probability that a decision is replaced by its warmup value: 1 -> 0 over the warmup steps."""
    end = warmup * total_steps
    return max(0.0, 1.0 - step / end) if end > 0 else 0.0


class Controller(tf.Module):
    """Per-decision logits over a `SearchSpace`, with the REINFORCE update and the reward baseline."""

    def __init__(self, space: SearchSpace, learning_rate: float = 3e-4, baseline_momentum: float = 0.95,
                 name: str = "controller"):
        super().__init__(name=name)
        self.space = space
        self.choice_counts = [len(d.choices) for d in space.decisions]
        with self.name_scope:
            self.logits = [tf.Variable(tf.zeros([n]), name=f"logits_{i}")
                           for i, n in enumerate(self.choice_counts)]
            self.baseline = tf.Variable(0.0, trainable=False, name="baseline")
            self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
        self.base_learning_rate = learning_rate
        self.baseline_momentum = baseline_momentum
        self.optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.0, beta_2=0.999)
        self.optimizer.build(self.logits)

    # The distributions -------------------------------------------------------------------------
    def probabilities(self) -> List[np.ndarray]:
        return [tf.nn.softmax(l).numpy().astype(np.float64) for l in self.logits]

    def sample(self, rng: np.random.Generator, probabilities: Optional[List[np.ndarray]] = None) -> List[int]:
        """One architecture: a choice index per decision, drawn from the current probabilities (or from
        `probabilities`, the current ones computed once for many draws)."""
        return [int(rng.choice(len(p), p=p / p.sum())) for p in probabilities or self.probabilities()]

    def argmax(self) -> List[int]:
        """The most likely architecture (ties go to the first choice)."""
        return [int(np.argmax(l.numpy())) for l in self.logits]

    def entropy(self) -> float:
        return float(sum(-(p * np.log(np.maximum(p, 1e-30))).sum() for p in self.probabilities()))

    def log_prob(self, indices) -> tf.Tensor:
        """log p(a) of [D] or [R, D] choice indices (sum over decisions)."""
        indices = tf.convert_to_tensor(indices, tf.int32)
        terms = [tf.gather(tf.nn.log_softmax(l), indices[..., d]) for d, l in enumerate(self.logits)]
        return tf.add_n(terms)

    # Warmups -----------------------------------------------------------------------------------
    def warmup_choices(self, indices: Sequence[int], probability: float, rng: np.random.Generator) -> List[int]:
        """What the supernet runs for a sampled architecture during warmup (see the module docstring)."""
        choices = list(indices)
        if probability <= 0:
            return choices
        for d, decision in enumerate(self.space.decisions):
            if rng.random() < probability:
                if isinstance(decision.choices[0], WidthChoice):
                    choices[d] = int(np.argmax([c.filters for c in decision.choices]))
                else:
                    choices[d] = ALL_OPS
        return choices

    # The update --------------------------------------------------------------------------------
    def update(self, samples: Sequence[Sequence[int]], rewards: Sequence[float], learning_rate: float
               ) -> Dict[str, float]:
        """One REINFORCE step on the architectures of one search step (one per replica).

        The baseline moves with the mean reward; samples drawn during warmup should not be passed.
        """
        rewards = np.asarray(rewards, dtype=np.float32)
        if len(samples) != len(rewards) or len(rewards) == 0:
            raise ValueError(f"{len(samples)} samples and {len(rewards)} rewards")
        baseline = self.baseline_value()
        mean_reward = float(rewards.mean())
        advantage = rewards - (baseline if baseline is not None else mean_reward)
        self.optimizer.learning_rate = learning_rate
        loss = self._apply(tf.constant(np.asarray(samples, np.int32)), tf.constant(advantage))
        momentum = self.baseline_momentum
        self.baseline.assign(momentum * self.baseline + (1 - momentum) * mean_reward)
        self.updates.assign_add(1)
        return {"policy_loss": float(loss), "baseline": self.baseline_value(),
                "advantage": float(advantage.mean())}

    @tf.function
    def _apply(self, samples, advantages):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(tf.stop_gradient(advantages) * self.log_prob(samples))
        gradients = tape.gradient(loss, self.logits)
        self.optimizer.apply_gradients(zip(gradients, self.logits))
        return loss

    def baseline_value(self):
        """The bias-corrected moving average of the reward (None before the first update)."""
        updates = int(self.updates.numpy())
        if updates == 0:
            return None
        return float(self.baseline.numpy()) / (1 - self.baseline_momentum ** updates)

    def checkpoint_items(self) -> Dict[str, object]:
        return {"logits": self.logits, "baseline": self.baseline, "updates": self.updates,
                "optimizer": self.optimizer}


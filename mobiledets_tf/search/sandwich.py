"""The sandwich rule with in-place distillation for the supernet's shared-weight steps (`search.sandwich`).

As in BigNAS (after universally slimmable networks): each step trains, besides the architecture the
controller sampled, the largest and the smallest architecture of the space. The largest learns from
the labels; the smallest and the sampled one learn from the largest's predictions of the same images
(in-place distillation), so every path is pulled toward what the widest one computes. Losses of the
three paths add up to one gradient step (each path's gradient computed apart: `SandwichStep`). For
the detector, distillation keeps the form of the labels' losses: the classes by the sigmoid
Kullback-Leibler divergence to the largest path's class probabilities over every anchor and column,
the boxes by smooth L1 to its box encodings on the positive anchors; both divided by the positive
anchors as the labels' losses are.

The largest and smallest architectures are those of the most and fewest trainable parameters
(`Supernet.parameter_count`), found by coordinate ascent over the decisions.
"""
from typing import Callable, Dict, List, Sequence

import tensorflow as tf

from mobiledets_tf.detection.losses import localization_loss_sum
from mobiledets_tf.training.task import LOSS_KEYS


def extreme_architecture(num_choices: Sequence[int], size: Callable[[List[int]], int], largest: bool,
                         max_rounds: int = 20) -> List[int]:
    """The choice indices of the largest (or smallest) `size`, by coordinate ascent from all zeros:
    each decision in turn takes the choice that makes `size` most extreme given the others, until a
    round changes nothing (ties keep the lower index)."""
    sign = 1 if largest else -1
    indices = [0] * len(num_choices)
    for _ in range(max_rounds):
        changed = False
        for d, n in enumerate(num_choices):
            best, best_size = indices[d], sign * size(indices)
            for choice in range(n):
                trial = indices[:d] + [choice] + indices[d + 1:]
                if sign * size(trial) > best_size:
                    best, best_size = choice, sign * size(trial)
            changed |= best != indices[d]
            indices[d] = best
        if not changed:
            return indices
    return indices


def distillation_losses(student, teacher, positive_mask, normalizer) -> Dict[str, tf.Tensor]:
    """The student's losses against the teacher's (box encodings, class logits) as its targets; the
    teacher's predictions pass no gradient."""
    student_boxes, student_logits = (tf.cast(t, tf.float32) for t in student)
    teacher_boxes, teacher_logits = (tf.stop_gradient(tf.cast(t, tf.float32)) for t in teacher)
    probabilities = tf.sigmoid(teacher_logits)
    # Cross-entropy minus the teacher's own entropy: zero where the student matches the teacher.
    divergence = (tf.nn.sigmoid_cross_entropy_with_logits(labels=probabilities, logits=student_logits)
                  - tf.nn.sigmoid_cross_entropy_with_logits(labels=probabilities, logits=teacher_logits))
    classification = tf.reduce_sum(divergence) / normalizer
    localization = localization_loss_sum(student_boxes, teacher_boxes, positive_mask) / normalizer
    return {"classification": classification, "localization": localization}


def _sum_gradients(*per_path: Sequence) -> List:
    """Variable by variable, the sum of the paths' gradients that exist (None where none does)."""
    summed = []
    for gradients in zip(*per_path):
        present = [g for g in gradients if g is not None]
        summed.append(tf.add_n(present) if present else None)
    return summed


class SandwichStep:
    """One shared-weight step of `task` (a SearchTask) by the sandwich rule: (per-replica batch,
    per-replica sampled choices) -> global-batch losses summed over the three paths.

    Each path's gradient is computed by a compiled function of its own (the teacher's, and one for
    both students, which take their choices as an input), and the sum is applied once: one graph
    holding all three paths and their gradients grows too large for TensorFlow's graph optimizer."""

    def __init__(self, task, largest: Sequence[int], smallest: Sequence[int]):
        self.task = task
        replicas = task.strategy.num_replicas_in_sync
        self.largest = task.per_replica_choices([list(largest)] * replicas)
        self.smallest = task.per_replica_choices([list(smallest)] * replicas)
        self._teacher = tf.function(self._teacher_gradients)
        self._student = tf.function(self._student_gradients)
        self._apply = tf.function(self._apply_sum)

    def _teacher_gradients(self, images, targets, choices):
        task = self.task

        def replica(images, targets, choices):
            return task.loss_gradients(
                lambda: task.replica_losses(images, targets, keep_predictions=True, choices=choices))
        return task.strategy.run(replica, args=(images, targets, choices))

    def _student_gradients(self, images, targets, choices, teacher_predictions):
        task = self.task

        def replica(images, targets, choices, teacher_predictions):
            def losses():
                student = distillation_losses(task.predict(images, True, choices=choices), teacher_predictions,
                                              targets["positive_mask"], task.loss_normalizer(targets))
                return {"total_loss": student["classification"] + student["localization"],
                        "classification_loss": student["classification"], "localization_loss": student["localization"],
                        "regularization_loss": tf.constant(0.0)}
            return task.loss_gradients(losses)
        return task.strategy.run(replica, args=(images, targets, choices, teacher_predictions))

    def _apply_sum(self, *per_path):
        self.task.strategy.run(lambda *gradients: self.task.apply_gradients(_sum_gradients(*gradients)), args=per_path)

    def __call__(self, batch, choices) -> Dict[str, tf.Tensor]:
        images, targets = batch
        teacher_gradients, teacher = self._teacher(images, targets, self.largest)
        paths = [teacher]
        gradients = [teacher_gradients]
        for student_choices in (self.smallest, choices):
            student_gradients, student = self._student(images, targets, student_choices, teacher["predictions"])
            gradients.append(student_gradients)
            paths.append(student)
        self._apply(*gradients)
        strategy = self.task.strategy
        return {k: tf.add_n([strategy.reduce(tf.distribute.ReduceOp.SUM, path[k], axis=None) for path in paths])
                for k in LOSS_KEYS}

"""The sandwich rule with in-place distillation for the supernet's shared-weight steps (`search.sandwich`).

As in BigNAS and Once-for-All: each step trains, besides the architecture the controller sampled, the
largest and the smallest architecture of the space. The largest learns from the labels; the smallest
and the sampled one learn from the largest's predictions of the same images (in-place distillation),
so every path is pulled toward what the widest one computes. Losses of the three paths add up to one
gradient step. For the detector, distillation keeps the form of the labels' losses: the classes by
the sigmoid Kullback-Leibler divergence to the largest path's class probabilities over every anchor
and column, the boxes by smooth L1 to its box encodings on the positive anchors; both divided by the
positive anchors as the labels' losses are.

The largest and smallest architectures are those of the most and fewest trainable parameters
(`Supernet.parameter_count`), found by coordinate ascent over the decisions.
"""
from typing import Callable, Dict, List, Sequence

import tensorflow as tf

from mobiledets_tf.detection.losses import localization_loss_sum


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


def sandwich_losses(task, images, targets, sampled, largest, smallest) -> Dict[str, tf.Tensor]:
    """This replica's losses of one sandwich step of `task` (a SearchTask): the largest path's on the
    labels plus the smallest and sampled paths' distillation losses, each summed over the paths."""
    normalizer = task.loss_normalizer(targets)
    teacher = task.predict(images, True, choices=largest)
    labels = task.detector.losses(teacher, targets, normalizer=normalizer)
    classification, localization = labels["classification"], labels["localization"]
    for choices in (smallest, sampled):
        student = distillation_losses(task.predict(images, True, choices=choices), teacher,
                                      targets["positive_mask"], normalizer)
        classification += student["classification"]
        localization += student["localization"]
    regularization = task.regularization_loss()
    return {"total_loss": classification + localization + regularization,
            "classification_loss": classification, "localization_loss": localization,
            "regularization_loss": regularization}

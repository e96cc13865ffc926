"""TensorBoard pictures of training progress: detections of the current model on validation images."""
import numpy as np
import tensorflow as tf

from mobiledets_tf.data import pipeline
from mobiledets_tf.evaluation.visualize import draw_detections


def detection_image_summary_fn(task, num_images: int = 4, score_threshold: float = 0.3):
    """Returns a function giving uint8 [N, S, S, 3] images with the model's current detections.

    Uses the first validation images (training images when there is no validation split).
    """
    pattern = task.data.val_pattern or task.data.train_pattern
    size = task.config.model.input_size
    state = {}

    def images_with_detections():
        if "batch" not in state:
            images, groundtruth = next(iter(pipeline.eval_dataset(pattern, size, num_images)))
            real = groundtruth["groundtruth_classes"].numpy() > 0
            boxes = groundtruth["groundtruth_boxes"].numpy()
            state["batch"] = (images, [boxes[i][real[i]] for i in range(len(boxes))])
        images, gt_boxes = state["batch"]
        detections = {k: v.numpy() for k, v in task.detector.detect(images).items()}
        drawn = [draw_detections(images[i].numpy(), detections["boxes"][i], detections["classes"][i],
                                 detections["scores"][i], task.data.class_names,
                                 score_threshold=score_threshold, groundtruth_boxes=gt_boxes[i])
                 for i in range(images.shape[0])]
        return tf.constant(np.stack(drawn))

    return images_with_detections

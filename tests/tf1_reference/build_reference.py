"""Builds an SSDLite graph with the TF1 Object Detection API's own code and writes a reference.

Run in a subprocess, with the API installed by `tests/tf1_reference/api.py` on `PYTHONPATH`; the
shims below (tf_slim under TF 2.20, TF-slim's `nets` package as the API's MobileNetV2 extractor
imports it) then never touch the test process. For one architecture it
1. builds, in a `tf.Graph()`, the API's feature extractor, `ConvolutionalBoxPredictor` with depthwise
   box and class heads, `create_ssd_anchors` anchors, `FasterRcnnBoxCoder` and
   `batch_multiclass_non_max_suppression`, configured as the zoo's SSDLite configs configure them;
2. gives every variable a random value (BatchNorm statistics and scales too) and saves a TF1
   checkpoint `model.ckpt-400000` with decoy variables a zoo training checkpoint carries besides the
   model (global_step, Momentum slots, a moving-average shadow, quantization ranges);
3. decodes and resizes the given image files as the API's input pipeline does and writes the raw box
   encodings and class logits, anchors, decoded boxes (also of the encodings scaled by
   DECODE_STRESS_SCALE) and NMS output to `reference.npz`, and the model variables (name -> shape)
   to `variables.json`.
"""
import argparse
import importlib
import importlib.util
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

EXTRACTORS = {
    "mobiledet_cpu": ("ssd_mobiledet_feature_extractor", "SSDMobileDetCPUFeatureExtractor"),
    "mobiledet_dsp": ("ssd_mobiledet_feature_extractor", "SSDMobileDetDSPFeatureExtractor"),
    "mobiledet_edgetpu": ("ssd_mobiledet_feature_extractor", "SSDMobileDetEdgeTPUFeatureExtractor"),
    "mobiledet_gpu": ("ssd_mobiledet_feature_extractor", "SSDMobileDetGPUFeatureExtractor"),
    "mobilenet_v2": ("ssd_mobilenet_v2_feature_extractor", "SSDMobileNetV2FeatureExtractor"),
}
# BatchNorm of the extra layers and the box predictor (the configs' conv_hyperparams).
HEAD_BATCH_NORM = {
    "mobiledet": dict(decay=0.97, epsilon=0.001),
    "mobilenet_v2": dict(decay=0.9997, epsilon=0.001),
}
DECOY_TRAINING_STEP = 400000
# The raw box encodings are also decoded scaled by this factor: heights and widths then reach
# exp(encoding / 5) far beyond what a trained model predicts, where box coders that clip differ.
DECODE_STRESS_SCALE = 50.0


def install_shims():
    """Lets tf_slim 1.1.0 and TF-slim's `nets` package (shipped as object_detection.nets) load."""
    for suffix in ("", ".base", ".convolutional", ".core", ".normalization", ".pooling",
                   ".variable_scope_shim"):
        sys.modules["tf_keras.legacy_tf_layers" + suffix] = importlib.import_module(
            "tf_keras.src.legacy_tf_layers" + suffix)
    from tensorflow.python.framework import ops
    if not hasattr(ops, "Tensor"):
        ops.Tensor = tf.Tensor
    import object_detection
    nets_dir = os.path.join(os.path.dirname(object_detection.__file__), "nets")
    spec = importlib.util.spec_from_file_location(
        "nets", os.path.join(nets_dir, "__init__.py"), submodule_search_locations=[nets_dir])
    nets = importlib.util.module_from_spec(spec)
    sys.modules["nets"] = nets
    spec.loader.exec_module(nets)


def head_hyperparams(arch: str):
    """The arg_scope the configs' conv_hyperparams build (L2 4e-5, truncated normal 0.03, ReLU6, BN)."""
    import tf_slim as slim
    bn = HEAD_BATCH_NORM["mobilenet_v2" if arch == "mobilenet_v2" else "mobiledet"]

    def arg_scope():
        with slim.arg_scope([slim.conv2d, slim.separable_conv2d],
                            weights_regularizer=slim.l2_regularizer(4e-5),
                            weights_initializer=tf.compat.v1.truncated_normal_initializer(stddev=0.03),
                            activation_fn=tf.nn.relu6, normalizer_fn=slim.batch_norm):
            with slim.arg_scope([slim.batch_norm], is_training=False, scale=True, center=True,
                                **bn) as scope:
                return scope
    return arg_scope


def load_resized_images(paths, input_size: int) -> np.ndarray:
    """Decodes each file with TensorFlow and resizes it as the API's fixed_shape_resizer does."""
    from object_detection.core import preprocessor
    images = []
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        encoded = tf.compat.v1.placeholder(tf.string, [])
        image = tf.cast(tf.io.decode_image(encoded, channels=3, expand_animations=False), tf.float32)
        resized, _ = preprocessor.resize_image(image, new_height=input_size, new_width=input_size)
        for path in paths:
            with open(path, "rb") as f:
                images.append(session.run(resized, {encoded: f.read()}))
    return np.stack(images)


def build_graph(arch: str, input_size: int, num_classes: int, batch: int):
    """Returns (images placeholder, dict of output tensors) of the API's SSDLite model."""
    import tf_slim as slim
    from object_detection.anchor_generators import multiple_grid_anchor_generator
    from object_detection.box_coders import faster_rcnn_box_coder
    from object_detection.core import box_list, box_list_ops, post_processing
    from object_detection.predictors import convolutional_box_predictor
    from object_detection.predictors.heads import box_head, class_head
    module, class_name = EXTRACTORS[arch]
    extractor_class = getattr(importlib.import_module(f"object_detection.models.{module}"), class_name)
    hyperparams = head_hyperparams(arch)
    extractor = extractor_class(is_training=False, depth_multiplier=1.0, min_depth=16,
                                pad_to_multiple=1, conv_hyperparams_fn=hyperparams,
                                use_depthwise=True)
    anchor_generator = multiple_grid_anchor_generator.create_ssd_anchors(
        num_layers=6, min_scale=0.2, max_scale=0.95, aspect_ratios=(1.0, 2.0, 0.5, 3.0, 0.3333),
        interpolated_scale_aspect_ratio=1.0, reduce_boxes_in_lowest_layer=True)
    predictor = convolutional_box_predictor.ConvolutionalBoxPredictor(
        is_training=False, num_classes=num_classes,
        box_prediction_head=box_head.ConvolutionalBoxHead(
            is_training=False, box_code_size=4, kernel_size=3, use_depthwise=True),
        class_prediction_head=class_head.ConvolutionalClassHead(
            is_training=False, num_class_slots=num_classes + 1, use_dropout=False,
            dropout_keep_prob=0.8, kernel_size=3, class_prediction_bias_init=-4.6,
            use_depthwise=True),
        other_heads={}, conv_hyperparams_fn=hyperparams, num_layers_before_predictor=0,
        min_depth=0, max_depth=0)
    box_coder = faster_rcnn_box_coder.FasterRcnnBoxCoder(scale_factors=[10.0, 10.0, 5.0, 5.0])

    images = tf.compat.v1.placeholder(tf.float32, [batch, input_size, input_size, 3], "images")
    preprocessed = extractor.preprocess(images)
    # SSDMetaArch.predict sets BatchNorm's mode around the extractor (the MobileNetV2 extractor's
    # slim training_scope leaves it unset, i.e. training, otherwise).
    with slim.arg_scope([slim.batch_norm], is_training=False), \
            tf.compat.v1.variable_scope(None, "FeatureExtractor", [preprocessed]):
        feature_maps = extractor.extract_features(preprocessed)
    predictions = predictor.predict(feature_maps, anchor_generator.num_anchors_per_location())
    box_encodings = tf.squeeze(tf.concat(predictions["box_encodings"], axis=1), axis=2)
    class_logits = tf.concat(predictions["class_predictions_with_background"], axis=1)
    grid_sizes = [(m.shape[1], m.shape[2]) for m in feature_maps]
    anchors = box_list_ops.concatenate(
        anchor_generator.generate(grid_sizes, im_height=input_size, im_width=input_size)).get()
    tiled = tf.tile(anchors[tf.newaxis], [batch, 1, 1])
    decoded = box_coder.decode(tf.reshape(box_encodings, [-1, 4]),
                               box_list.BoxList(tf.reshape(tiled, [-1, 4]))).get()
    decoded = tf.reshape(decoded, [batch, -1, 4])
    stressed = box_coder.decode(tf.reshape(box_encodings * DECODE_STRESS_SCALE, [-1, 4]),
                                box_list.BoxList(tf.reshape(tiled, [-1, 4]))).get()
    scores = tf.sigmoid(class_logits)[:, :, 1:]
    nms_boxes, nms_scores, nms_classes, _, _, num_detections = (
        post_processing.batch_multiclass_non_max_suppression(
            decoded[:, :, tf.newaxis, :], scores, score_thresh=1e-8, iou_thresh=0.6,
            max_size_per_class=100, max_total_size=100,
            clip_window=tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [batch, 1])))
    outputs = dict(box_encodings=box_encodings, class_logits=class_logits, anchors=anchors,
                   decoded_boxes=decoded, stressed_decoded_boxes=tf.reshape(stressed, [batch, -1, 4]), nms_boxes=nms_boxes, nms_scores=nms_scores,
                   nms_classes=nms_classes, num_detections=num_detections,
                   feature_map_sizes=tf.constant(np.array(grid_sizes, np.int32)))
    return images, outputs


def random_value(name: str, shape, rng: np.random.Generator) -> np.ndarray:
    """A random value that keeps activations in range; BatchNorm parameters far from defaults."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "gamma":
        return rng.uniform(0.5, 1.5, shape)
    if leaf in ("beta", "moving_mean", "biases"):
        return rng.normal(0.0, 0.1, shape)
    if leaf == "moving_variance":
        return rng.uniform(0.5, 2.0, shape)
    fan_in = int(np.prod(shape[:2])) * (1 if leaf == "depthwise_weights" else int(shape[2]))
    return rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)


def add_decoys(model_variables, rng: np.random.Generator):
    """Variables of a zoo training checkpoint that are not part of the model."""
    names = [v.op.name for v in model_variables]
    first_conv = next(n for n in names if n.endswith("/weights")).rsplit("/", 1)[0]
    decoys = [tf.compat.v1.train.get_or_create_global_step()]
    for variable in model_variables[:3]:
        decoys.append(tf.compat.v1.Variable(rng.normal(size=variable.shape).astype(np.float32),
                                            name=f"{variable.op.name}/Momentum"))
    shadow = model_variables[-1]
    decoys.append(tf.compat.v1.Variable(rng.normal(size=shadow.shape).astype(np.float32),
                                        name=f"{shadow.op.name}/ExponentialMovingAverage"))
    for quantity in ("act_quant", "weights_quant"):
        for bound, value in (("min", -6.0), ("max", 6.0)):
            decoys.append(tf.compat.v1.Variable(value, name=f"{first_conv}/{quantity}/{bound}"))
    return decoys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", required=True, choices=sorted(EXTRACTORS))
    parser.add_argument("--input_size", type=int, default=320)
    parser.add_argument("--num_classes", type=int, default=90)
    parser.add_argument("--images", required=True, help="comma-separated image files")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    install_shims()
    paths = args.images.split(",")
    resized = load_resized_images(paths, args.input_size)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    with tf.Graph().as_default():
        images, outputs = build_graph(args.arch, args.input_size, args.num_classes, len(paths))
        model_variables = tf.compat.v1.global_variables()
        decoys = add_decoys(model_variables, rng)
        assigned = {v: random_value(v.op.name, v.shape.as_list(), rng).astype(np.float32)
                    for v in model_variables}
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer(),
                        {v.initial_value: value for v, value in assigned.items()})
            saver = tf.compat.v1.train.Saver(model_variables + decoys)
            saver.save(session, os.path.join(args.output_dir, "model.ckpt"),
                       global_step=DECOY_TRAINING_STEP, write_meta_graph=False)
            results = session.run(outputs, {images: resized})
    np.savez(os.path.join(args.output_dir, "reference.npz"), resized_images=resized, **results)
    with open(os.path.join(args.output_dir, "variables.json"), "w") as f:
        json.dump({"model": {v.op.name: v.shape.as_list() for v in model_variables},
                   "decoys": [v.op.name for v in decoys]}, f, indent=1)
    print(f"{args.arch}: {len(model_variables)} model variables, {len(decoys)} decoys, "
          f"{results['anchors'].shape[0]} anchors")


if __name__ == "__main__":
    main()

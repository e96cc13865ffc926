"""The functions an exported detector runs: the batch-1 TFLite graph and the TF serving signature.

`DetectionExportModule` holds a trained detector (float or QAT) and exposes
- `tflite_detect`: image float32 [1, S, S, 3] in [-1, 1] -> the four outputs of the TFLite SSD
  postprocess op, named `OUTPUT_NAMES` (static batch 1, as the converter and accelerators need);
- `tflite_raw`: the same image -> the raw predictions `RAW_OUTPUT_NAMES` (box encodings [1, A, 4]
  relative to the anchors, class logits [1, A, C + 1] with the background in column 0), for
  exports without the postprocess op (decoding and NMS then run in the application);
- `serve`: images uint8 [B, S, S, 3] -> the same four outputs computed in TensorFlow (decode + NMS),
  the serving signature of the exported SavedModel, usable in TensorFlow without TFLite.
"""
import tensorflow as tf

from mobiledets_tf.detection.box_coding import BOX_CODER_SCALES, anchors_to_center_size
from mobiledets_tf.export.postprocess_op import NmsSettings, detection_postprocess
from mobiledets_tf.models.detector import SSDLiteDetector

OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
RAW_OUTPUT_NAMES = ("box_encodings", "class_logits")


class DetectionExportModule(tf.Module):
    def __init__(self, detector: SSDLiteDetector, nms: NmsSettings):
        super().__init__(name="detection_export")
        self.model = detector.model
        self._detector = detector
        self._nms = nms
        self._anchors_center_size = anchors_to_center_size(detector.anchors)
        size = detector.input_size
        image = [tf.TensorSpec([1, size, size, 3], tf.float32, "image")]
        self.tflite_detect = tf.function(self._tflite_detect, input_signature=image)
        self.tflite_raw = tf.function(self._tflite_raw, input_signature=image)
        self.serve = tf.function(
            self._serve, input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, "images")])

    def _tflite_detect(self, image):
        box_encodings, class_logits = self.model(image, training=False)
        class_scores = tf.sigmoid(class_logits)
        outputs = detection_postprocess(box_encodings, class_scores, self._anchors_center_size,
                                        self._detector.num_classes, self._nms, BOX_CODER_SCALES)
        return dict(zip(OUTPUT_NAMES, outputs))

    def _tflite_raw(self, image):
        return dict(zip(RAW_OUTPUT_NAMES, self.model(image, training=False)))

    def _serve(self, images):
        nms = self._nms
        detections = self._detector.detect(
            images, score_threshold=nms.score_threshold, iou_threshold=nms.iou_threshold,
            max_detections_per_class=nms.detections_per_class if nms.use_regular_nms else nms.max_detections,
            max_total_detections=nms.max_detections)
        return {"detection_boxes": detections["boxes"], "detection_classes": detections["classes"],
                "detection_scores": detections["scores"],
                "num_detections": tf.cast(detections["num_detections"], tf.float32)}

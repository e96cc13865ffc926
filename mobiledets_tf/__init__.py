"""mobiledets_tf: MobileDets (SSDLite detectors over the TDB search space) for TensorFlow 2.

Importing the package selects the Keras 2 API (tf-keras) for TensorFlow before TensorFlow is first
imported: tensorflow-model-optimization and the TFLite converter only work with Keras 2 models.
This is the one place where `TF_USE_LEGACY_KERAS` is handled.
"""
import os
import sys
import warnings

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    warnings.warn(
        "tensorflow was imported before mobiledets_tf without TF_USE_LEGACY_KERAS=1; "
        "tf.keras is Keras 3 in this process. mobiledets_tf builds its models with tf_keras "
        "directly, but import mobiledets_tf first (or set TF_USE_LEGACY_KERAS=1) so that "
        "tensorflow-model-optimization and the TFLite converter see the same Keras.",
        stacklevel=2,
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.1.0"

"""The Keras 2 API (tf-keras) used everywhere in the package.

`import mobiledets_tf` has already selected Keras 2 for TensorFlow; modules import Keras from here so
there is one spelling of it.
"""
import tf_keras as keras  # noqa: F401  (re-exported)

__all__ = ["keras"]

"""Shared test set-up: the package is imported first so that TensorFlow uses Keras 2."""
import os

import mobiledets_tf  # noqa: F401

import pytest

ALL_ARCHITECTURES = ("mobiledet_cpu", "mobiledet_edgetpu", "mobiledet_dsp", "mobiledet_gpu",
                     "mobilenet_v2", "mobilenet_v3_large")
MOBILEDETS = ALL_ARCHITECTURES[:4]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end test kept small enough for CI")


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Every test starts from an empty Keras name scope, so layer names are deterministic."""
    from mobiledets_tf.keras import keras
    keras.backend.clear_session()
    yield

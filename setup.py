"""Installs mobiledets_tf with pinned dependencies (versions that are known to work together)."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.20.0",
    "tf-keras==2.20.1",
    "tf-models-official==2.20.0",
    "tensorflow-model-optimization==0.8.1",
    "ai-edge-litert==2.3.0",
    "pycocotools==2.0.11",
    "numpy==2.4.6",
    "absl-py==1.4.0",  # tensorflow-model-optimization needs absl-py < 2
    "PyYAML==6.0.3",
    "Pillow==13.0.0",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",  # latency-vs-AP plots
    "scipy==1.17.1",  # Kendall tau of cost-model predictions
]

setup(
    name="mobiledets_tf",
    version="0.1.0",
    description="MobileDets for TensorFlow 2: SSDLite detectors over the TDB search space, "
                "latency-targeted search, QAT and int8 TFLite export for mobile accelerators.",
    packages=find_packages(include=["mobiledets_tf", "mobiledets_tf.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=INSTALL_REQUIRES,
    # pytest 9.2 ignores pytest-xdist 3.8's --dist loadgroup (pytest-xdist issue 1386): keep 9.1.
    extras_require={"test": ["pytest==9.1.1", "pytest-xdist==3.8.0",
                             "papermill==2.7.0", "ipykernel==7.4.0"]},  # notebook tests
    entry_points={
        "console_scripts": [
            "mobiledets-stats=mobiledets_tf.bin.stats:run",
            "mobiledets-make-tfrecords=mobiledets_tf.bin.make_tfrecords:run",
            "mobiledets-train=mobiledets_tf.bin.train:run",
            "mobiledets-eval=mobiledets_tf.bin.eval:run",
            "mobiledets-export=mobiledets_tf.bin.export:run",
            "mobiledets-benchmark=mobiledets_tf.bin.benchmark:run",
            "mobiledets-latency-data=mobiledets_tf.bin.latency_data:run",
            "mobiledets-cost-model=mobiledets_tf.bin.cost_model:run",
            "mobiledets-search=mobiledets_tf.bin.search:run",
            "mobiledets-quickstart=mobiledets_tf.bin.quickstart:run",
            "mobiledets-import=mobiledets_tf.bin.import_tf1:run",
        ],
    },
)

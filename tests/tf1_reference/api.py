"""Installs the TF1 Object Detection API's source for the parity tests and runs the reference builder.

PyPI ships the API as `tf-models-research-object-detection`; its declared dependencies would
downgrade half the environment, so it goes with `--no-deps` into a folder of its own (never the
test environment's site-packages), once per machine, under a file lock so that parallel test
workers do not race. `build_reference` runs `build_reference.py` in a subprocess with that folder on
PYTHONPATH.
"""
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile

API_REQUIREMENT = "tf-models-research-object-detection==2.8.0.post1"
BUILDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "build_reference.py")


def install_api() -> str:
    """The folder holding `object_detection` (installed on first use under
    $MOBILEDETS_TF1_API_DIR, default ~/.cache/mobiledets_tf/tf1_api)."""
    root = os.environ.get("MOBILEDETS_TF1_API_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "mobiledets_tf", "tf1_api"))
    target = os.path.join(root, API_REQUIREMENT.replace("==", "-"))
    if os.path.isdir(os.path.join(target, "object_detection")):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isdir(os.path.join(target, "object_detection")):
            staging = tempfile.mkdtemp(prefix="staging-", dir=os.path.dirname(target))
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                            "--disable-pip-version-check", "--target", staging, API_REQUIREMENT],
                           check=True)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
    return target


def build_reference(arch: str, images, output_dir: str, input_size: int = 320,
                    num_classes: int = 90, seed: int = 0) -> str:
    """Runs the builder for `arch` on image files; returns `output_dir` (see build_reference.py)."""
    environment = dict(os.environ, PYTHONPATH=install_api(), TF_USE_LEGACY_KERAS="1",
                       CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, BUILDER, f"--arch={arch}", f"--input_size={input_size}",
               f"--num_classes={num_classes}", f"--images={','.join(images)}",
               f"--output_dir={output_dir}", f"--seed={seed}"]
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the TF1 reference of {arch} failed:\n{result.stderr[-4000:]}")
    return output_dir

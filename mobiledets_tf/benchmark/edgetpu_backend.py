"""Edge TPU backend: `*_edgetpu.tflite` models (from edgetpu_compiler) with libedgetpu as a delegate.

The runtime library `libedgetpu.so.1` comes only from Coral's apt repository (libedgetpu1-std or
libedgetpu1-max); it is found on the loader path or given by path. Without it, or for a model that was
not compiled for the Edge TPU, every affected row reports why and the rest of the table is produced.
Timing is the local backend's worker with the delegate loaded (`device` option: usb:N or pci:N).
"""
import ctypes.util
import os
from typing import Callable, List, Optional, Sequence

from mobiledets_tf.benchmark.latency import Measurement
from mobiledets_tf.benchmark.local import measure_in_worker
from mobiledets_tf.benchmark.targets import Target

EDGETPU_LIBRARY = "libedgetpu.so.1"
EDGETPU_SUFFIX = "_edgetpu.tflite"
INSTALL_HINT = ("install the Edge TPU runtime from Coral's apt repository (apt-get install "
                "libedgetpu1-std) or pass --edgetpu_library=PATH")


def find_edgetpu_library(library: Optional[str] = None) -> Optional[str]:
    """The given path when it exists, else libedgetpu.so.1 if the dynamic loader can find it."""
    if library:
        return library if os.path.exists(library) else None
    return EDGETPU_LIBRARY if ctypes.util.find_library("edgetpu") else None


def benchmark_on_edgetpu(model_paths: Sequence[str], targets: Sequence[Target],
                         library: Optional[str] = None, threads: int = 1, warmup_runs: int = 10,
                         num_runs: int = 50, progress: Optional[Callable[[Measurement], None]] = None
                         ) -> List[Measurement]:
    found = find_edgetpu_library(library)
    measurements = []
    for target in targets:
        device_option = target.option("device", "usb:0")
        device = f"Edge TPU {device_option}"
        for path in model_paths:
            if not path.endswith(EDGETPU_SUFFIX):
                measurements.append(Measurement(
                    path, "edgetpu", target.label, device, threads,
                    error=f"not compiled for the Edge TPU (expected *{EDGETPU_SUFFIX}): run "
                          "mobiledets-export --edgetpu where edgetpu_compiler is installed"))
            elif found is None:
                measurements.append(Measurement(
                    path, "edgetpu", target.label, device, threads,
                    error=f"{library or EDGETPU_LIBRARY} not found: {INSTALL_HINT}"))
            else:
                measurement = measure_in_worker(path, "edgetpu", target, device, threads, warmup_runs,
                                                num_runs, delegate=found,
                                                delegate_options={"device": device_option})
                if "Failed to load delegate" in measurement.error:
                    measurement.error += (f" (is an Edge TPU attached as {device_option}? check lsusb or "
                                          "lspci, and the target's device option)")
                measurements.append(measurement)
            if progress:
                progress(measurements[-1])
    return measurements

"""Named architectures: the ArchSpec files under `configs/architectures/`, loaded by name or path."""
import os
from typing import List

from mobiledets_tf import fileio
from mobiledets_tf.arch.spec import ArchSpec, ArchSpecError

ARCHITECTURES_DIR = os.environ.get(
    "MOBILEDETS_ARCHITECTURES_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                 "configs", "architectures"))


def available_architectures() -> List[str]:
    if not fileio.isdir(ARCHITECTURES_DIR):
        return []
    return sorted(f[:-5] for f in fileio.listdir(ARCHITECTURES_DIR) if f.endswith(".yaml"))


def load_arch(name_or_path: str) -> ArchSpec:
    """Loads an ArchSpec from a .yaml/.json path, or by name from `configs/architectures/`."""
    if isinstance(name_or_path, ArchSpec):
        return name_or_path
    if fileio.exists(name_or_path) or name_or_path.endswith((".yaml", ".yml", ".json")):
        return ArchSpec.load(name_or_path)
    path = os.path.join(ARCHITECTURES_DIR, f"{name_or_path}.yaml")
    if not fileio.exists(path):
        raise ArchSpecError(
            f"unknown architecture {name_or_path!r}: not a file, and not one of "
            f"{', '.join(available_architectures()) or '(no files in ' + ARCHITECTURES_DIR + ')'}")
    return ArchSpec.load(path)

"""ArchSpec: the serialisable, validated description of a backbone, and the registry of named ones."""
from mobiledets_tf.arch.registry import available_architectures, load_arch
from mobiledets_tf.arch.spec import ArchSpec, ArchSpecError, BlockSpec, Endpoint

__all__ = ["ArchSpec", "ArchSpecError", "BlockSpec", "Endpoint", "available_architectures", "load_arch"]

"""Swapping attributes of a tfmot module for the duration of a call, restored on the way out.

tfmot looks some of its functions and classes up on their modules at call time (the quantizers call
`quant_ops.MovingAvgQuantize`, the layout transform builds its list from `default_8bit_transforms`);
this is how the package changes one of them for one call without copying tfmot's code.
"""
import contextlib
from typing import Any, Dict


@contextlib.contextmanager
def patched_attributes(module: Any, replacements: Dict[str, Any]):
    """Within this context, `module.NAME` is `replacements[NAME]` for each name."""
    originals = {name: getattr(module, name) for name in replacements}
    for name, value in replacements.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in originals.items():
            setattr(module, name, value)

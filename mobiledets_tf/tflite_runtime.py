"""Loading a .tflite model into the ai-edge-litert interpreter, with an optional delegate.

Shared by TFLite evaluation and the latency benchmark; it imports no TensorFlow, so benchmark
worker processes start in a fraction of a second. A model given as a URL is read into memory (which
loads TensorFlow's file system).
"""
from typing import Mapping, Optional, Union

from ai_edge_litert.interpreter import Interpreter, OpResolverType, load_delegate

from mobiledets_tf import fileio


class TFLiteModelError(ValueError):
    """A .tflite file (or its delegate) that cannot be loaded, or is not a detector of this package."""


def load_interpreter(model_path: Union[str, bytes], delegate: Optional[str] = None,
                     delegate_options: Optional[Mapping[str, str]] = None,
                     num_threads: Optional[int] = None, xnnpack: bool = True) -> Interpreter:
    """An allocated interpreter of a model: `model_path` is a file (local or remote) or the model's
    bytes. `xnnpack=False` uses TFLite's reference CPU kernels without XNNPACK."""
    delegates = []
    if delegate:
        try:
            delegates.append(load_delegate(delegate, dict(delegate_options or {})))
        except (ValueError, OSError) as e:
            raise TFLiteModelError(f"cannot load the delegate {delegate}: {e}") from e
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if isinstance(model_path, bytes):
        model, model_path = {"model_content": model_path}, "<model bytes>"
    elif fileio.is_remote(model_path):
        model = {"model_content": fileio.read_bytes(model_path)}
    else:
        model = {"model_path": model_path}
    try:
        interpreter = Interpreter(**model, experimental_delegates=delegates or None,
                                  num_threads=num_threads, experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise TFLiteModelError(f"{model_path}: cannot load the model: {e}") from e
    return interpreter

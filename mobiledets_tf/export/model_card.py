"""What an exported .tflite is: architecture, input size, precision, multiply-adds, parameters.

`mobiledets-export` writes `{name}_{precision}.model.json` next to each model; tables (latency
benchmarks, the search's latency dataset) read it back with `load_model_card`. A compiled
`*_edgetpu.tflite` shares the card of the model it was compiled from. For a .tflite without a card,
`card_from_tflite` reads what the file itself says (input size and precision from the input tensor).
"""
import dataclasses
import json
import os
from typing import Optional

from mobiledets_tf import fileio
from mobiledets_tf.export.tflite_model import read_tflite

CARD_SUFFIX = ".model.json"
EDGETPU_STEM_SUFFIX = "_edgetpu"


@dataclasses.dataclass
class ModelCard:
    architecture: str
    precision: str
    input_size: int
    num_classes: Optional[int] = None
    depth_multiplier: Optional[float] = None
    multiply_adds: Optional[int] = None
    parameters: Optional[int] = None


def card_path(tflite_path: str) -> str:
    stem = os.path.splitext(tflite_path)[0]
    if stem.endswith(EDGETPU_STEM_SUFFIX):
        stem = stem[:-len(EDGETPU_STEM_SUFFIX)]
    return stem + CARD_SUFFIX


def save_model_card(card: ModelCard, tflite_path: str) -> str:
    path = card_path(tflite_path)
    fileio.write_text_atomically(path, json.dumps(dataclasses.asdict(card), indent=2) + "\n")
    return path


def card_from_tflite(tflite_path: str) -> ModelCard:
    """Input size and precision read off the flatbuffer (architecture = file stem; no compute counts)."""
    graph = read_tflite(tflite_path).main
    image = graph.tensors[graph.inputs[0]]
    if image.dtype in ("uint8", "int8"):
        precision = "int8"
    elif any(t.dtype == "float16" for t in graph.tensors):
        precision = "float16"
    else:
        precision = image.dtype
    stem = os.path.splitext(os.path.basename(tflite_path))[0]
    input_size = image.shape[1] if len(image.shape) == 4 else 0
    return ModelCard(architecture=stem, precision=precision, input_size=int(input_size))


def load_model_card(tflite_path: str) -> ModelCard:
    """The card written at export, else what the .tflite itself says."""
    path = card_path(tflite_path)
    if fileio.exists(path):
        return ModelCard(**json.loads(fileio.read_text(path)))
    return card_from_tflite(tflite_path)

"""TFLite Model Metadata for exported SSD detectors, so MediaPipe's ObjectDetector and Android apps load them.

The metadata follows tflite-support's ``metadata_schema.fbs`` (file identifier "M001"): a ModelMetadata
flatbuffer stored in a model buffer referenced by the model's "TFLITE_METADATA" metadata entry, with
the labels file appended to the model as an uncompressed zip archive. It is written here by hand with
the ``flatbuffers`` package because the official writers cannot be installed next to TensorFlow 2.20:
tflite-support needs protobuf < 4 and mediapipe needs absl-py >= 2 (tensorflow-model-optimization
needs absl-py < 2). Only the schema tables a detector needs are written; the slot numbers below are
the field positions in that schema.
"""
import io
import zipfile
from typing import Dict, List, Sequence

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers
from flatbuffers.table import Table

from ai_edge_litert import schema_py_generated as tfl

from mobiledets_tf.export.flatbuffer_model import (as_bytes, pack_model, postprocess_op, read_model,
                                                   single_subgraph)

METADATA_ENTRY_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
LABELS_FILE_NAME = "labels.txt"
ANCHORS_FILE_NAME = "anchors.csv"

# The postprocess op's outputs in their fixed order, named as MediaPipe's ObjectDetector looks them up.
LOCATION, CATEGORY, SCORE, NUM_DETECTIONS = "location", "category", "score", "number of detections"
POSTPROCESS_OUTPUT_ROLES = (LOCATION, CATEGORY, SCORE, NUM_DETECTIONS)
DETECTION_GROUP = "detection_result"
# Output tensor groups were added in metadata schema 1.2.0; nothing newer is used.
MIN_PARSER_VERSION = "1.2.0"

# Enum and union values of metadata_schema.fbs.
_ASSOCIATED_FILE_UNKNOWN, _ASSOCIATED_FILE_TENSOR_AXIS_LABELS = 0, 2
_ASSOCIATED_FILE_TENSOR_VALUE_LABELS = 3
_COLOR_SPACE_RGB = 1
_BOUNDING_BOX_BOUNDARIES = 1
_COORDINATE_RATIO = 0
_CONTENT_FEATURE, _CONTENT_IMAGE, _CONTENT_BOUNDING_BOX = 1, 2, 3
_PROCESS_UNIT_NORMALIZATION = 1
# The postprocess op writes boxes as (ymin, xmin, ymax, xmax); the index gives, for left, top,
# right and bottom in turn, where that value is.
_BOX_INDEX = (1, 0, 3, 2)
_DESCRIPTIONS = {
    LOCATION: "The locations of the detected boxes.",
    CATEGORY: "The categories of the detected boxes.",
    SCORE: "The scores of the detected boxes.",
    NUM_DETECTIONS: "The number of the detected boxes.",
}
# The outputs of a model exported without the postprocess op, in its output order.
RAW_BOX_ENCODINGS, RAW_CLASS_LOGITS = "raw box encodings", "raw class logits"
_RAW_DESCRIPTIONS = {
    RAW_BOX_ENCODINGS: (f"Box encodings [1, anchors, 4] (ty, tx, th, tw) relative to the anchors of "
                        f"{ANCHORS_FILE_NAME} (one 'ymin,xmin,ymax,xmax' line per anchor, normalised), "
                        f"Faster R-CNN box coder with scales 10, 10, 5, 5."),
    RAW_CLASS_LOGITS: (f"Class logits [1, anchors, classes + 1]: column 0 is the background, column k "
                       f"the class on line k of {LABELS_FILE_NAME}; scores are their sigmoid."),
}


def add_detection_metadata(model_bytes: bytes, labels: Sequence[str], *, name: str, description: str,
                           version: str = "", author: str = "mobiledets_tf", license: str = "Apache-2.0",
                           input_mean: float = 127.5, input_std: float = 127.5) -> bytes:
    """Returns the model with detector metadata and its labels file packed in (replacing any earlier ones).

    ``labels`` are the class names in the model's 0-based class order (without background).
    ``input_mean``/``input_std`` describe how pixels in [0, 255] were normalised for a float input;
    quantized models keep the values of the float model they come from.
    """
    labels = _checked_labels(labels)
    model = read_model(model_bytes)
    subgraph = single_subgraph(model)
    postprocess = postprocess_op(model, subgraph)
    _check_num_classes(postprocess, labels)
    output_roles = _output_roles(subgraph, postprocess)
    image = subgraph.tensors[_single_input(subgraph)]
    metadata = _model_metadata(image, lambda b: [_output_tensor_metadata(b, role) for role in output_roles],
                               group=True, name=name, description=description, version=version,
                               author=author, license=license, mean=input_mean, std=input_std)
    _set_metadata_buffer(model, metadata)
    return _append_files(pack_model(model), {LABELS_FILE_NAME: "\n".join(labels).encode("utf-8")})


def add_raw_prediction_metadata(model_bytes: bytes, labels: Sequence[str], anchors: np.ndarray, *,
                                name: str, description: str, version: str = "",
                                author: str = "mobiledets_tf", license: str = "Apache-2.0",
                                input_mean: float = 127.5, input_std: float = 127.5) -> bytes:
    """Metadata of a model exported without the postprocess op (outputs: box encodings, class
    logits), with its labels file and its anchors (`ANCHORS_FILE_NAME`) packed in."""
    labels = _checked_labels(labels)
    model = read_model(model_bytes)
    subgraph = single_subgraph(model)
    if len(subgraph.outputs) != 2:
        raise ValueError(f"expected the 2 raw prediction outputs, found {len(subgraph.outputs)}")
    num_anchors = int(subgraph.tensors[int(subgraph.outputs[0])].shape[1])
    if len(anchors) != num_anchors:
        raise ValueError(f"{len(anchors)} anchors given but the model predicts {num_anchors} boxes")
    image = subgraph.tensors[_single_input(subgraph)]
    metadata = _model_metadata(image, lambda b: [_raw_output_metadata(b, role) for role in
                                                 (RAW_BOX_ENCODINGS, RAW_CLASS_LOGITS)],
                               group=False, name=name, description=description, version=version,
                               author=author, license=license, mean=input_mean, std=input_std)
    _set_metadata_buffer(model, metadata)
    return _append_files(pack_model(model), {LABELS_FILE_NAME: "\n".join(labels).encode("utf-8"),
                                             ANCHORS_FILE_NAME: anchors_csv(anchors).encode("utf-8")})


def anchors_csv(anchors: np.ndarray) -> str:
    """One 'ymin,xmin,ymax,xmax' line per anchor (normalised), in the order of the predictions."""
    return "".join(",".join(f"{v:.9g}" for v in anchor) + "\n" for anchor in np.asarray(anchors))


def read_packed_file(model_bytes: bytes, file_name: str) -> str:
    """A text file packed into the model (the labels, the anchors of a raw model)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            return archive.read(file_name).decode("utf-8")
    except (zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"the model has no packed {file_name}: {error}") from None


def read_metadata_buffer(model_bytes: bytes) -> bytes:
    """The model's "TFLITE_METADATA" flatbuffer; raises ValueError if the model has none."""
    model = tfl.Model.GetRootAs(bytearray(model_bytes), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_ENTRY_NAME.encode():
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    raise ValueError(f"the model has no {METADATA_ENTRY_NAME} metadata entry")


def read_output_tensor_names(model_bytes: bytes) -> List[str]:
    """Names of the output TensorMetadata of the first subgraph, in the subgraph's output order."""
    buffer = bytearray(read_metadata_buffer(model_bytes))
    if buffer[4:8] != METADATA_IDENTIFIER:
        raise ValueError(f"metadata identifier is {bytes(buffer[4:8])!r}, expected {METADATA_IDENTIFIER!r}")
    root = Table(buffer, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buffer, 0))
    subgraph = _read_tables(root, 3)[0]
    return [_read_string(tensor, 0) for tensor in _read_tables(subgraph, 3)]


def read_labels(model_bytes: bytes) -> List[str]:
    """The labels packed into the model by :func:`add_detection_metadata`."""
    return read_packed_file(model_bytes, LABELS_FILE_NAME).split("\n")


# --- checks on the TFLite model -------------------------------------------------------------------

def _checked_labels(labels: Sequence[str]) -> List[str]:
    labels = [str(label) for label in labels]
    if not labels:
        raise ValueError("labels must not be empty: the labels file names the detected categories")
    if any("\n" in label for label in labels):
        raise ValueError("labels must not contain line breaks: the labels file has one label a line")
    return labels


def _single_input(subgraph) -> int:
    if len(subgraph.inputs) != 1:
        raise ValueError(f"expected a model with one image input, found {len(subgraph.inputs)} inputs")
    index = int(subgraph.inputs[0])
    tensor = subgraph.tensors[index]
    shape = [int(d) for d in tensor.shape]
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or tensor.type not in (
            tfl.TensorType.FLOAT32, tfl.TensorType.UINT8):
        raise ValueError(f"expected a [1, H, W, 3] float32 or uint8 image input, found {shape} of type "
                         f"{tensor.type}")
    return index


def _check_num_classes(postprocess, labels: Sequence[str]) -> None:
    options = flexbuffers.Loads(bytes(bytearray(postprocess.customOptions)))
    if options.get("num_classes") != len(labels):
        raise ValueError(f"{len(labels)} labels given but the postprocess op detects "
                         f"{options.get('num_classes')} classes")


def _output_roles(subgraph, postprocess) -> List[str]:
    """The role of every subgraph output, in the subgraph's output order."""
    role_of_tensor = {int(t): role for t, role in zip(postprocess.outputs, POSTPROCESS_OUTPUT_ROLES)}
    outputs = [int(t) for t in subgraph.outputs]
    if sorted(outputs) != sorted(role_of_tensor):
        raise ValueError("the model outputs must be exactly the 4 outputs of the postprocess op, found "
                         f"tensors {outputs} instead of {sorted(role_of_tensor)}")
    return [role_of_tensor[t] for t in outputs]


# --- the metadata flatbuffer ---------------------------------------------------------------------

def _model_metadata(image, output_metadata, *, group: bool, name: str, description: str, version: str,
                    author: str, license: str, mean: float, std: float) -> bytes:
    """The ModelMetadata flatbuffer (identifier "M001") of a detector with one image input;
    `output_metadata(builder)` writes the outputs' TensorMetadata, `group` adds the detection group."""
    b = flatbuffers.Builder(1024)
    inputs = [_image_tensor_metadata(b, image, mean, std)]
    outputs = output_metadata(b)
    groups = None
    if group:
        groups = _offsets_vector(b, [_table(b, (0, "offset", b.CreateString(DETECTION_GROUP)),
                                            (1, "offset", _strings_vector(b, [LOCATION, CATEGORY, SCORE])))])
    # SubGraphMetadata: name 0, input_tensor_metadata 2, output_tensor_metadata 3, output_tensor_groups 8.
    subgraph = _table(b, (0, "offset", b.CreateString(name)),
                      (2, "offset", _offsets_vector(b, inputs)),
                      (3, "offset", _offsets_vector(b, outputs)),
                      (8, "offset", groups))
    # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5,
    # min_parser_version 7.
    root = _table(b, (0, "offset", b.CreateString(name)),
                  (1, "offset", b.CreateString(description)),
                  (2, "offset", b.CreateString(version) if version else None),
                  (3, "offset", _offsets_vector(b, [subgraph])),
                  (4, "offset", b.CreateString(author)),
                  (5, "offset", b.CreateString(license)),
                  (7, "offset", b.CreateString(MIN_PARSER_VERSION)))
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def _image_tensor_metadata(b, image, mean: float, std: float) -> int:
    """TensorMetadata of the image input: RGB image, normalisation (x - mean) / std, value range."""
    if image.type == tfl.TensorType.UINT8:
        low, high = 0.0, 255.0
    else:
        low, high = (0.0 - mean) / std, (255.0 - mean) / std
    properties = _table(b, (0, "int8", _COLOR_SPACE_RGB))  # ImageProperties.color_space
    content = _table(b, (0, "uint8", _CONTENT_IMAGE), (1, "offset", properties))
    normalization = _table(b, (0, "offset", _floats_vector(b, [mean])), (1, "offset", _floats_vector(b, [std])))
    process_unit = _table(b, (0, "uint8", _PROCESS_UNIT_NORMALIZATION), (1, "offset", normalization))
    stats = _table(b, (0, "offset", _floats_vector(b, [high])), (1, "offset", _floats_vector(b, [low])))
    # TensorMetadata: name 0, description 1, content 3, process_units 4, stats 5.
    return _table(b, (0, "offset", b.CreateString("image")),
                  (1, "offset", b.CreateString("Input image to be detected.")),
                  (3, "offset", content),
                  (4, "offset", _offsets_vector(b, [process_unit])),
                  (5, "offset", stats))


def _output_tensor_metadata(b, role: str) -> int:
    """TensorMetadata of one postprocess output; the labels file hangs on the category tensor."""
    if role == LOCATION:
        properties = _table(b, (0, "offset", _uints_vector(b, _BOX_INDEX)),  # BoundingBoxProperties
                            (1, "int8", _BOUNDING_BOX_BOUNDARIES), (2, "int8", _COORDINATE_RATIO))
        content_type = _CONTENT_BOUNDING_BOX
    else:
        properties = _table(b)  # FeatureProperties has no fields
        content_type = _CONTENT_FEATURE
    # The detections run along dimension 2 of boxes, classes and scores ([1, N, ...]).
    value_range = None if role == NUM_DETECTIONS else _table(b, (0, "int32", 2), (1, "int32", 2))
    content = _table(b, (0, "uint8", content_type), (1, "offset", properties), (2, "offset", value_range))
    files = None
    if role == CATEGORY:
        labels = _table(b, (0, "offset", b.CreateString(LABELS_FILE_NAME)),
                        (1, "offset", b.CreateString("Labels for categories that the model can detect.")),
                        (2, "int8", _ASSOCIATED_FILE_TENSOR_VALUE_LABELS))
        files = _offsets_vector(b, [labels])
    return _table(b, (0, "offset", b.CreateString(role)),
                  (1, "offset", b.CreateString(_DESCRIPTIONS[role])),
                  (3, "offset", content),
                  (6, "offset", files))


def _raw_output_metadata(b, role: str) -> int:
    """TensorMetadata of a raw prediction output, with the file that explains its last axis."""
    if role == RAW_BOX_ENCODINGS:
        file_name, file_type = ANCHORS_FILE_NAME, _ASSOCIATED_FILE_UNKNOWN
    else:
        file_name, file_type = LABELS_FILE_NAME, _ASSOCIATED_FILE_TENSOR_AXIS_LABELS
    content = _table(b, (0, "uint8", _CONTENT_FEATURE), (1, "offset", _table(b)))
    associated = _table(b, (0, "offset", b.CreateString(file_name)),
                        (1, "offset", b.CreateString(_RAW_DESCRIPTIONS[role])),
                        (2, "int8", file_type))
    return _table(b, (0, "offset", b.CreateString(role)),
                  (1, "offset", b.CreateString(_RAW_DESCRIPTIONS[role])),
                  (3, "offset", content),
                  (6, "offset", _offsets_vector(b, [associated])))


_PREPEND = {"offset": "PrependUOffsetTRelativeSlot", "uint8": "PrependUint8Slot",
            "int8": "PrependInt8Slot", "int32": "PrependInt32Slot"}


def _table(b, *fields) -> int:
    """A table from (slot, kind, value) fields written in slot order; fields whose value is None are left out."""
    fields = [field for field in fields if field[2] is not None]
    b.StartObject(max((slot for slot, _, _ in fields), default=-1) + 1)
    for slot, kind, value in fields:
        getattr(b, _PREPEND[kind])(slot, value, 0)
    return b.EndObject()


def _offsets_vector(b, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _strings_vector(b, texts: Sequence[str]) -> int:
    return _offsets_vector(b, [b.CreateString(text) for text in texts])


def _floats_vector(b, values: Sequence[float]) -> int:
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        b.PrependFloat32(float(value))
    return b.EndVector()


def _uints_vector(b, values: Sequence[int]) -> int:
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        b.PrependUint32(int(value))
    return b.EndVector()


def _read_tables(table: Table, slot: int) -> List[Table]:
    """The tables of the vector field at `slot` (empty if the field is absent)."""
    offset = table.Offset(4 + 2 * slot)
    if not offset:
        return []
    start = table.Vector(offset)
    return [Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(offset))]


def _read_string(table: Table, slot: int) -> str:
    offset = table.Offset(4 + 2 * slot)
    return table.String(offset + table.Pos).decode("utf-8") if offset else ""


# --- packing the model ----------------------------------------------------------------------------

def _set_metadata_buffer(model, metadata: bytes) -> None:
    """Points a "TFLITE_METADATA" entry at a new buffer holding ``metadata``, dropping an older one."""
    for entry in [e for e in model.metadata or [] if as_bytes(e.name) == METADATA_ENTRY_NAME.encode()]:
        model.buffers[entry.buffer].data = None
        model.metadata.remove(entry)
    buffer = tfl.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    model.buffers.append(buffer)
    entry = tfl.MetadataT()
    entry.name = METADATA_ENTRY_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]


def _append_files(model_bytes: bytes, files: Dict[str, bytes]) -> bytes:
    """Appends ``files`` as a stored (uncompressed) zip, as tflite-support does: readers map them in place."""
    stream = io.BytesIO(model_bytes)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as archive:
        for file_name, data in files.items():
            archive.writestr(zipfile.ZipInfo(file_name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return stream.getvalue()

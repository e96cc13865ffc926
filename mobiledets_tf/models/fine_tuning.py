"""Starting a detector from another detector's checkpoint whose class head may differ.

`restore_initial_weights` restores a float model by variable name (the names the checkpoint's object
graph records for the model), so a checkpoint of the same architecture with another class count
fits: backbone, extra layers and box predictor are restored, as are the class predictors' depthwise
convs and BatchNorm; the class-prediction 1x1 convs (`predictorN_class_conv`), whose widths depend
on the class count, start fresh, or keep the columns of the classes `class_slots` maps to a slot of
the checkpoint (e.g. the COCO classes a custom label map also names). Any other missing or
misshapen variable is an error. One log line says what was restored and what was not.
"""
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.core.protobuf import trackable_object_graph_pb2

from mobiledets_tf.models.checkpoints import CheckpointError, resolve_checkpoint

CLASS_HEAD_LAYER = re.compile(r"^predictor\d+_class_conv$")
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def model_variable_keys(reader, root_child: str = "model") -> Dict[str, str]:
    """{variable name: checkpoint key} of the variables under the checkpoint root's `root_child`."""
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
    start = next((c.node_id for c in graph.nodes[0].children if c.local_name == root_child), None)
    if start is None:
        raise CheckpointError(f"the checkpoint has no {root_child!r} object")
    keys, pending, seen = {}, [start], set()
    while pending:
        node_id = pending.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        node = graph.nodes[node_id]
        for attribute in node.attributes:
            if attribute.name == "VARIABLE_VALUE" and attribute.full_name:
                keys[attribute.full_name] = attribute.checkpoint_key
        pending.extend(child.node_id for child in node.children)
    return keys


def _class_head_columns(old: np.ndarray, new: np.ndarray, class_slots: Sequence[Optional[int]]):
    """`new` with the columns of mapped classes taken from `old` (last axis: anchors x slots)."""
    new_slots, result = len(class_slots), new.copy()
    anchors = new.shape[-1] // new_slots
    old_slots = old.shape[-1] // anchors
    for anchor in range(anchors):
        for slot, old_slot in enumerate(class_slots):
            if old_slot is not None:
                result[..., anchor * new_slots + slot] = old[..., anchor * old_slots + old_slot]
    return result


def restore_initial_weights(model, checkpoint: str, description: str,
                            class_slots: Optional[Sequence[Optional[int]]] = None) -> str:
    """Restores `model` from `checkpoint` (file or run directory) by variable name; returns the prefix.

    `class_slots[j]`: the checkpoint's class slot (0 = background) whose class-head columns new slot
    j keeps, or None to start it fresh; without it a class head of another width starts fresh.
    """
    path = resolve_checkpoint(checkpoint)
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(path)   # a prefix: no folder lookup
        keys = model_variable_keys(reader)
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the {description} from it: {e}") from e
    shapes = reader.get_variable_to_shape_map()
    restored, fresh, mapped, problems = 0, [], [], []
    for layer in model.layers:
        for weight in layer.weights:
            name = weight.name.split(":")[0]
            if name not in keys:
                problems.append(f"{name} is not in the checkpoint")
                continue
            value = reader.get_tensor(keys[name])
            is_class_head = bool(CLASS_HEAD_LAYER.match(layer.name))
            if is_class_head and class_slots is not None:
                weight.assign(_class_head_columns(value, weight.numpy(), class_slots))
                mapped.append(name)
            elif list(shapes[keys[name]]) == weight.shape.as_list():
                weight.assign(value)
                restored += 1
            elif is_class_head:
                fresh.append(name)
            else:
                problems.append(f"{name} is {shapes[keys[name]]} in the checkpoint, "
                                f"{weight.shape.as_list()} in the model")
    if problems:
        raise CheckpointError(f"{path}: cannot restore the {description} from it: "
                              + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))
    message = f"Initialised the {description} from {path}: restored {restored} weights"
    if mapped:
        kept = sum(slot is not None for slot in class_slots)
        message += (f"; the class-prediction convs keep the columns of {kept} of {len(class_slots)} "
                    f"class slots (background included), the others start fresh ({len(mapped)} weights)")
    if fresh:
        message += f"; started fresh (another class count): {', '.join(fresh)}"
    logging.info(message)
    return path


def class_slots_by_name(new_names: Sequence[Optional[str]], old_names: Sequence[Optional[str]]
                        ) -> List[Optional[int]]:
    """Slot mapping of two label maps' class names by index (name lists indexed by class id - 1, None
    for unused ids), matched case-insensitively; slot 0 (background) maps to 0."""
    old_slots = {name.lower(): i + 1 for i, name in enumerate(old_names) if name}
    return [0] + [old_slots.get(name.lower()) if name else None for name in new_names]

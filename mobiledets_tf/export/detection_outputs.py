"""Puts the detection tail of a converted .tflite in the standard form: outputs, names, op order.

- The converter orders a model's outputs as it likes (num_detections often first) and names them
  `StatefulPartitionedCall:N`. Android apps expect outputs 0..3 to be boxes, classes, scores and
  num_detections, the outputs of the `TFLite_Detection_PostProcess` op in that order, so the output
  list and tensor names are rewritten (signature runners keep working: they refer to tensor indices).
- The converter may schedule the DEQUANTIZE of the box encodings before the class branch has
  finished. The Edge TPU compiler cuts one accelerator subgraph in execution order and sends every
  op after the first unmappable one to the CPU, so the ops that only feed the postprocess op are
  moved to just before it, at the end (a valid order: nothing else reads their outputs).
"""
from mobiledets_tf.export.flatbuffer_model import pack_model, postprocess_op, read_model, single_subgraph
from mobiledets_tf.export.inference_graph import OUTPUT_NAMES


def standardize_detection_outputs(model_bytes: bytes) -> bytes:
    """The model with outputs ordered (boxes, classes, scores, num_detections) and named OUTPUT_NAMES."""
    model = read_model(model_bytes)
    subgraph = single_subgraph(model)
    outputs = [int(i) for i in postprocess_op(model, subgraph).outputs]
    if sorted(int(i) for i in subgraph.outputs) != sorted(outputs):
        raise ValueError("the model's outputs are not exactly those of the postprocess op")
    subgraph.outputs = outputs
    subgraph.operators = postprocess_last(subgraph, postprocess_op(model, subgraph))
    for index, name in zip(outputs, OUTPUT_NAMES):
        subgraph.tensors[index].name = name.encode()
    return pack_model(model)


def postprocess_last(subgraph, postprocess) -> list:
    """The ops in an order that ends with the ops feeding only the postprocess op, then the op itself."""
    model_outputs = {int(i) for i in subgraph.outputs}
    readers = {}
    for op in subgraph.operators:
        for tensor in op.inputs:
            readers.setdefault(int(tensor), []).append(op)

    def feeds_only_postprocess(op) -> bool:
        return all(int(t) not in model_outputs and all(r is postprocess for r in readers.get(int(t), []))
                   for t in op.outputs) and any(postprocess in readers.get(int(t), []) for t in op.outputs)

    others = [op for op in subgraph.operators if op is not postprocess and not feeds_only_postprocess(op)]
    feeders = [op for op in subgraph.operators if op is not postprocess and feeds_only_postprocess(op)]
    return others + feeders + [postprocess]

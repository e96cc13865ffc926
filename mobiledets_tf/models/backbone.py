"""Builds a backbone from an ArchSpec by wiring TDB blocks into a flat Functional graph.

Layer names are `{prefix}_b{index:02d}_{sublayer}` so that a layer can be traced back to its block
in the ArchSpec file.
"""
from typing import Dict, List, Tuple

from mobiledets_tf.arch.spec import ArchSpec, BlockSpec
from mobiledets_tf.layers import (Block, ConvBnAct, FusedInvertedBottleneck, InvertedBottleneck,
                                  TuckerConv, defaults, round_filters)


def make_block(spec: ArchSpec, block: BlockSpec, in_channels: int, depth_multiplier: float,
               name: str) -> Block:
    """Creates the Keras block layer for one ArchSpec block, with widths scaled by the multiplier."""
    filters = round_filters(block.filters, depth_multiplier)
    activation = spec.block_activation(block)
    if block.type == "conv":
        return ConvBnAct(filters, block.kernel, block.stride, activation, name=name)
    common = dict(in_channels=in_channels, filters=filters, kernel_size=block.kernel,
                  strides=block.stride, activation=activation, residual=block.residual, name=name)
    if block.type == "tucker":
        return TuckerConv(input_rank_ratio=block.input_rank_ratio,
                          output_rank_ratio=block.output_rank_ratio, **common)
    se = dict(se_ratio=block.se, se_gate=spec.se_gate, se_activation=spec.se_activation, se_width=spec.se_width)
    if block.type == "ibn":
        return InvertedBottleneck(expansion=block.expansion, **common, **se)
    if block.type == "fused":
        return FusedInvertedBottleneck(expansion=block.expansion, **common, **se)
    raise ValueError(f"unknown block type {block.type!r}")


def make_blocks(spec: ArchSpec, depth_multiplier: float = 1.0, prefix: str = "backbone") -> List[Block]:
    """All block layers of `spec`, in order (input width 3), with the spec's BatchNorm epsilon."""
    blocks, in_channels = [], 3
    with defaults.backbone_batch_norm_epsilon(spec.batch_norm_epsilon):
        for index, block in enumerate(spec.blocks):
            layer = make_block(spec, block, in_channels, depth_multiplier, f"{prefix}_b{index:02d}")
            blocks.append(layer)
            in_channels = round_filters(block.filters, depth_multiplier)
    return blocks


def wire_backbone(spec: ArchSpec, inputs, depth_multiplier: float = 1.0,
                  prefix: str = "backbone") -> Tuple[Dict[str, object], List[Block]]:
    """Wires the backbone on Keras tensors; returns ({endpoint name: tensor}, block layers).

    Blocks after the last endpoint are not built (they would not feed anything).
    """
    last = max(e.block for e in spec.endpoints.values())
    blocks = make_blocks(spec, depth_multiplier, prefix)[: last + 1]
    tensors, x = [], inputs
    for block in blocks:
        outputs = block.wire(x)
        tensors.append(outputs)
        x = outputs["output"]
    endpoints = {name: tensors[e.block][e.tensor] for name, e in spec.endpoints.items()}
    return endpoints, blocks

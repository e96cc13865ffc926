"""A TDB block built and run from its plan (`block_plans.block_plan`): convs with BatchNorm and the
block activation, optional squeeze-and-excite, the linear projection, and the explicit shortcut.

Subclasses (`ConvBnAct`, `InvertedBottleneck`, `FusedInvertedBottleneck`, `TuckerConv`) only name
their block type and its fields; every sublayer, its width and its place in the sequence come from
the plan, which the supernet's shared-weight ops follow too. Sublayer `step.name` of block `b` is
the Keras layer `b_{step.name}` (its BatchNorm `b_{step.bn_name}`, its activation `b_{step.act_name}`)
and the block's attribute of the same name.
"""
from typing import Dict, Optional

from mobiledets_tf.layers.block import Block
from mobiledets_tf.layers.block_plans import ConvStep, SqueezeExciteStep, block_plan
from mobiledets_tf.layers.block_rules import DEFAULT_SE_WIDTH
from mobiledets_tf.layers.squeeze_excite import SqueezeExcite


class PlannedBlock(Block):
    block_type = ""

    def __init__(self, in_channels: Optional[int], filters: int, kernel_size: int = 3, strides: int = 1,
                 activation: str = "relu6", residual: bool = False, se_ratio: float = 0.0,
                 se_gate: str = "sigmoid", se_activation: Optional[str] = None, se_width: str = DEFAULT_SE_WIDTH,
                 plan_fields: Optional[Dict[str, float]] = None, **kwargs):
        super().__init__(**kwargs)
        if residual and (strides != 1 or in_channels != filters):
            raise ValueError(
                f"{self.name}: a residual connection needs stride 1 and equal input/output widths, "
                f"got stride {strides} and {in_channels}->{filters} channels")
        self.in_channels, self.filters = in_channels, filters
        self.kernel_size, self.strides = kernel_size, strides
        self.activation, self.residual = activation, residual
        self.se_ratio, self.se_gate, self.se_activation = se_ratio, se_gate, se_activation
        self.se_width = se_width
        self.plan_fields = dict(plan_fields or {})   # the block type's own fields (expansion, ranks)
        for field, value in self.plan_fields.items():
            setattr(self, field, value)
        try:
            self.steps = block_plan(self.block_type, in_channels, filters, kernel_size, strides,
                                    se=se_ratio, se_width=se_width, **self.plan_fields)
        except ValueError as e:
            raise ValueError(f"{self.name}: {e}") from None
        self.se = None
        for step in self.steps:
            if isinstance(step, SqueezeExciteStep):
                self.se = SqueezeExcite(step.channels, step.hidden, activation=se_activation or activation,
                                        gate=se_gate, name=f"{self.name}_{step.name}")
                continue
            if step.depthwise:
                conv = self._depthwise(step.kernel_size, step.strides, step.name)
            else:
                conv = self._conv(step.out_channels, step.kernel_size, step.strides, step.name)
            setattr(self, step.name, conv)
            setattr(self, step.bn_name, self._bn(step.bn_name))
            if not step.linear:
                setattr(self, step.act_name, self._act(activation, step.act_name))
        self.shortcut_add = self._residual_add() if residual else None

    def step(self, name: str) -> ConvStep:
        """The conv step called `name` in this block's plan."""
        return next(s for s in self.steps if s.name == name)

    def forward(self, inputs):
        x, tensors = inputs, {}
        for step in self.steps:
            if isinstance(step, SqueezeExciteStep):
                x = self.se.forward(x)["output"]
                continue
            x = getattr(self, step.bn_name)(getattr(self, step.name)(x))
            if not step.linear:
                x = getattr(self, step.act_name)(x)
            if step.expansion_output:
                tensors["expansion"] = x
        if self.shortcut_add is not None:
            x = self.shortcut_add([x, inputs])
        return {"output": x, **tensors}

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels, "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "activation": self.activation, "residual": self.residual,
                "se_ratio": self.se_ratio, "se_gate": self.se_gate,
                "se_activation": self.se_activation, "se_width": self.se_width, **self.plan_fields}

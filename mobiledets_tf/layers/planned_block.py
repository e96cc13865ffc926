"""Shared skeleton of the three TDB bottleneck blocks: [SE] -> 1x1 linear projection -> [+ shortcut].

Subclasses build their own leading convolutions (`_body`); this class owns the optional
squeeze-and-excite, the linear projection (BN, no activation) and the explicit residual connection.
"""
from typing import Dict, Optional

from mobiledets_tf.layers.block import Block
from mobiledets_tf.layers.squeeze_excite import SqueezeExcite


class Bottleneck(Block):
    def __init__(self, in_channels: int, filters: int, kernel_size: int = 3, strides: int = 1,
                 activation: str = "relu6", residual: bool = False, se_ratio: float = 0.0,
                 se_gate: str = "sigmoid", se_activation: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        if residual and (strides != 1 or in_channels != filters):
            raise ValueError(
                f"{self.name}: a residual connection needs stride 1 and equal input/output widths, "
                f"got stride {strides} and {in_channels}->{filters} channels")
        self.in_channels, self.filters = in_channels, filters
        self.kernel_size, self.strides = kernel_size, strides
        self.activation, self.residual = activation, residual
        self.se_ratio, self.se_gate, self.se_activation = se_ratio, se_gate, se_activation

    def _build_tail(self, body_channels: int):
        """Creates SE (if any) over `body_channels` and the projection; call at the end of __init__."""
        self.se = None
        if self.se_ratio:
            self.se = SqueezeExcite(body_channels, self.se_ratio,
                                    activation=self.se_activation or self.activation,
                                    gate=self.se_gate, name=f"{self.name}_se")
        self.project = self._conv(self.filters, 1, 1, "project")
        self.project_bn = self._bn("project_bn")
        self.shortcut_add = self._residual_add() if self.residual else None

    def _body(self, inputs) -> Dict[str, object]:
        """Returns {"body": tensor fed to SE/projection, optional "expansion": endpoint tensor}."""
        raise NotImplementedError

    def forward(self, inputs):
        tensors = self._body(inputs)
        x = tensors.pop("body")
        if self.se is not None:
            x = self.se.forward(x)["output"]
        x = self.project_bn(self.project(x))
        if self.shortcut_add is not None:
            x = self.shortcut_add([x, inputs])
        return {"output": x, **tensors}

    def get_config(self):
        return {**super().get_config(), "in_channels": self.in_channels, "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "activation": self.activation, "residual": self.residual,
                "se_ratio": self.se_ratio, "se_gate": self.se_gate,
                "se_activation": self.se_activation}

"""Features of the TuNAS linear cost model (reference section 8) over one search space.

For each layer, the one-hot of the joint choice of the distinct decisions it depends on (input
width, output width, op), i.e. the Kronecker product of their one-hots; a layer inside a stage
reads and writes the same width decision, which then counts once. Layers with a single possible
configuration have no features. Because decisions are independent, `expected` computes the
expectation exactly as the Kronecker product of the per-decision probability vectors. Joint choices
are ordered by `choices.mixed_radix` (first decision most significant, the order of `np.kron` and
`itertools.product`). Plain data: no TensorFlow.
"""
import functools
import itertools
import math
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from mobiledets_tf.search.choices import Layer, WidthChoice, fail, mixed_radix


class CostFeatures:
    """The cost-model feature map of a `SearchSpace` (`space.cost_features`)."""

    def __init__(self, space):
        self.space = space
        self._layers = [layer for layer in space.layers if layer.feature_decisions]

    def _radices(self, layer: Layer) -> List[int]:
        return [len(self.space.decisions[d].choices) for d in layer.feature_decisions]

    @property
    def size(self) -> int:
        return sum(math.prod(self._radices(layer)) for layer in self._layers)

    def of(self, indices: Sequence[int]) -> np.ndarray:
        """0/1 vector: per layer with choices, the one-hot of the joint choice of its decisions."""
        parts = []
        for chosen in self.space.walk(indices):
            if chosen.layer.feature_decisions:
                radices = self._radices(chosen.layer)
                one_hot = np.zeros(math.prod(radices))
                one_hot[mixed_radix(chosen.digits, radices)] = 1.0
                parts.append(one_hot)
        return np.concatenate(parts) if parts else np.zeros(0)

    def expected(self, probabilities: Sequence[Sequence[float]]) -> np.ndarray:
        """E[features] under independent per-decision categoricals: Kronecker products of probabilities."""
        decisions, tag = self.space.decisions, f"search space {self.space.tag}"
        if len(probabilities) != len(decisions):
            fail(tag, f"expected {len(decisions)} probability vectors, got {len(probabilities)}")
        probs = []
        for d, p in zip(decisions, probabilities):
            p = np.asarray(p, dtype=np.float64)
            if p.shape != (len(d.choices),) or np.any(p < 0) or abs(p.sum() - 1) > 1e-6:
                fail(tag, f"decision {d.tag}: probabilities must be {len(d.choices)} non-negative numbers "
                          f"summing to 1, got {p}")
            probs.append(p)
        parts = [functools.reduce(np.kron, [probs[d] for d in layer.feature_decisions])
                 for layer in self._layers]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _settings(self) -> Iterator[Tuple[Layer, Dict[str, object]]]:
        """Yields (layer, {"in"/"out"/"op": value}) per feature, in `of` order."""
        decisions = self.space.decisions
        for layer in self._layers:
            roles = {}
            for role, d in (("in", layer.input_width_decision), ("out", layer.width_decision),
                            ("op", layer.op_decision)):
                if d is not None:
                    roles[d] = f"{roles[d]}={role}" if d in roles else role
            for combination in itertools.product(*(decisions[d].choices for d in layer.feature_decisions)):
                yield layer, {roles[d]: (c.filters if isinstance(c, WidthChoice) else c.label)
                              for d, c in zip(layer.feature_decisions, combination)}

    def names(self) -> List[str]:
        """A readable name per feature, e.g. `layer7 in=40 out=72 op=ibn k3 e4`."""
        return [f"layer{layer.index} " + " ".join(f"{role}={value}" for role, value in setting.items())
                for layer, setting in self._settings()]

    def pools(self) -> Tuple[np.ndarray, List[str]]:
        """(membership [F, K], pool names): features that share a configuration across layers.

        A feature belongs to two pools: the same setting (op, widths) in the layers of its stage that
        have the same shortcut status (same resolution, same block), and the same op anywhere in the
        backbone. Cost models use them to shrink each layer's cost towards what its neighbours share.
        """
        keys = []
        for layer, setting in self._settings():
            shared = " ".join(f"{role}={value}" for role, value in setting.items())
            op = setting.get("op", layer.ops[0].label)
            keys.append((f"stage{layer.stage}{' inner' if layer.may_be_residual else ''} {shared}",
                         f"any layer op={op}"))
        names = sorted({k for pair in keys for k in pair})
        column = {name: i for i, name in enumerate(names)}
        membership = np.zeros((len(keys), len(names)))
        for row, pair in enumerate(keys):
            for key in pair:
                membership[row, column[key]] = 1.0
        return membership, names

"""Random-search baseline: uniformly sampled architectures whose predicted latency lies near a target.

The fair comparison for a TuNAS result is random architectures of the same space at the same
predicted latency: `sample_near_target` draws uniformly from the space and keeps the first `num`
architectures (distinct) whose cost-model latency is within `band` (relative) of the target.
"""
from typing import List, Sequence, Tuple, Union

import numpy as np

from mobiledets_tf.search.cost_model import CostModel
from mobiledets_tf.search.space import SearchSpace


class NoArchitectureNearTarget(ValueError):
    """Too few sampled architectures fell within the latency band."""


def sample_near_target(space: SearchSpace, cost_model: CostModel, target_ms: float, num: int,
                       band: float = 0.05, seed: Union[int, Sequence[int]] = 0, max_draws: int = 200000
                       ) -> List[Tuple[List[int], float]]:
    """`num` distinct (indices, predicted ms) with |predicted / target - 1| <= band; `seed` as
    `np.random.default_rng` takes it."""
    if target_ms <= 0 or band <= 0 or num < 1:
        raise ValueError(f"need target_ms > 0, band > 0 and num >= 1, got {target_ms}, {band}, {num}")
    predict = cost_model.predictor(space)
    rng = np.random.default_rng(seed)
    found, seen = [], set()
    for _ in range(max_draws):
        indices = space.sample(rng)
        predicted = predict(indices)
        if abs(predicted / target_ms - 1) <= band and tuple(indices) not in seen:
            seen.add(tuple(indices))
            found.append((indices, predicted))
            if len(found) == num:
                return found
    raise NoArchitectureNearTarget(
        f"only {len(found)} of {max_draws} random architectures of {space.tag} are predicted within "
        f"{100 * band:g}% of {target_ms:g} ms (wanted {num}); choose a target inside the space's range "
        f"or widen the band")

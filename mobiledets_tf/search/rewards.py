"""The search's reward of a sampled architecture from its quality Q and predicted latency T (target T0).

- `absolute` (TuNAS, the default): `R = Q + beta * |T / T0 - 1|`, beta < 0 (`search.reward_beta`).
  Being off the target in either direction costs quality in proportion, so one search lands on the
  target: use it to hit a latency budget.
- `mnas_soft` (MnasNet): `R = Q * (T / T0) ** w` with w = `search.reward_exponent` (default -0.07)
  on both sides of the target: a trade-off that also rewards architectures faster than the target;
  where it lands depends on how Q and T trade in the space, so hitting a given target takes several
  searches with different T0 (MnasNet reports about seven).
- `mnas_hard` (MnasNet): w = 0 when T <= T0 and -1 above: any architecture within the budget is judged
  on Q alone, one over it is scaled down by T0 / T.
The multiplicative rewards need Q > 0 to steer: with Q = 0 every architecture scores 0.
"""
import math

REWARDS = ("absolute", "mnas_soft", "mnas_hard")
MNAS_HARD_EXPONENT = -1.0     # MnasNet's hard constraint: (alpha, beta) = (0, -1)


def capacity_term(weight: float, parameters_millions: float) -> float:
    """What `search.capacity_weight` adds to Q: weight x ln(trainable parameters in millions). At one
    latency, standalone AP50 rises with the parameter count while the supernet's Q barely follows it
    (benchmarks/results/supernet_spread.md)."""
    return weight * math.log(parameters_millions) if weight else 0.0


def reward(kind: str, quality: float, latency_ms: float, target_ms: float, beta: float = -0.10,
           exponent: float = -0.07) -> float:
    """The reward of one architecture; `beta` is used by `absolute`, `exponent` by `mnas_soft`."""
    if target_ms <= 0 or latency_ms <= 0:
        raise ValueError(f"latencies must be positive, got T={latency_ms} and T0={target_ms}")
    ratio = latency_ms / target_ms
    if kind == "absolute":
        return quality + beta * abs(ratio - 1.0)
    if kind == "mnas_soft":
        return quality * ratio ** exponent
    if kind == "mnas_hard":
        return quality * (ratio ** MNAS_HARD_EXPONENT if ratio > 1.0 else 1.0)
    raise ValueError(f"unknown reward {kind!r}; expected one of {', '.join(REWARDS)}")

"""Statistics of standalone AP50 over several training seeds, shared by the search benchmarks: how
much one training varies around its architecture's AP50, and how far such a ground truth can rank
architectures at all."""
import math
import statistics
from typing import NamedTuple, Sequence


def seed_noise(ap50: Sequence[Sequence[float]]) -> float:
    """One training's standard deviation around its architecture's AP50: the root mean square over
    the architectures of the standard deviation of their seeds (`ap50` [architecture][seed], two
    seeds or more)."""
    return math.sqrt(statistics.mean(statistics.variance(row) for row in ap50))


class Ceiling(NamedTuple):
    """How far a ground truth of standalone trainings can rank architectures (`ground_truth_ceiling`)."""
    spread: float            # standard deviation of the architectures' true AP50 (estimated)
    noise: float             # one training's standard deviation around its architecture's AP50 and its
                             # seed's offset (rms)
    seed_offset: float       # standard deviation of the seeds' offsets, common to every architecture
    tau_mean: float          # Kendall tau of a noise-free measure against the mean of the seeds
    tau_seed_pair: float     # Kendall tau expected between two seeds


def ground_truth_ceiling(ap50: Sequence[Sequence[float]]) -> Ceiling:
    """The ceiling of `ap50` ([architecture][seed], two seeds or more) as a ground truth, in a
    bivariate-normal model: each training's AP50 is its architecture's true AP50, plus an offset of
    its seed, the same for every architecture (every architecture trains on one data order per seed;
    an offset common to all of them changes no ranking), plus independent noise. The noise variance
    is the residual mean square of that two-way layout; the true variance is the variance of the
    architectures' seed means less the noise's share in them (at least 0); a correlation r becomes
    Kendall tau = 2/pi arcsin r."""
    archs, seeds = len(ap50), len(ap50[0])
    arch_means = [statistics.mean(row) for row in ap50]
    seed_means = [statistics.mean(column) for column in zip(*ap50)]
    grand_mean = statistics.mean(arch_means)
    residuals = [value - arch_mean - seed_mean + grand_mean
                 for row, arch_mean in zip(ap50, arch_means) for value, seed_mean in zip(row, seed_means)]
    noise_var = sum(r * r for r in residuals) / ((archs - 1) * (seeds - 1))
    true_var = max(statistics.variance(arch_means) - noise_var / seeds, 0.0)
    offset_var = max(statistics.variance(seed_means) - noise_var / archs, 0.0)

    def tau(correlation_squared: float) -> float:
        return 2 / math.pi * math.asin(math.sqrt(correlation_squared))

    def share(noise: float) -> float:   # the true variance's share of a variance with `noise` added
        return true_var / (true_var + noise) if noise else 1.0

    # Against the seeds' mean r^2 is the true share; between two seeds r itself is.
    return Ceiling(spread=math.sqrt(true_var), noise=math.sqrt(noise_var), seed_offset=math.sqrt(offset_var),
                   tau_mean=tau(share(noise_var / seeds)), tau_seed_pair=tau(share(noise_var) ** 2))

"""Builds the tf.distribute strategy named on the command line.

`default` (one device), `mirrored` (all local GPUs, or the local CPU devices), `multi_worker_mirrored`
(workers from TF_CONFIG) and `tpu` (a TPU name or address, or `local` on a TPU VM). Model Garden's
`distribute_utils.get_distribution_strategy` does the work; failing to reach a TPU is a
`StrategyError` that says what was tried.
"""
import tensorflow as tf
from official.common import distribute_utils

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")


class StrategyError(ValueError):
    """The requested strategy cannot run here (e.g. no TPU can be reached)."""


def split_cpu(num_devices: int) -> None:
    """Splits the physical CPU into `num_devices` logical devices (must run before TF initialises).

    Lets `mirrored` training run several replicas on a laptop, to test distributed set-ups locally.
    """
    if num_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)


def make_strategy(name: str, tpu_address: str = "") -> tf.distribute.Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored" and not tf.config.list_physical_devices("GPU"):
        cpus = [d.name.replace("physical_device:", "") for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    if name == "tpu":
        try:
            return distribute_utils.get_distribution_strategy(distribution_strategy=name,
                                                              tpu_address=tpu_address or None)
        except Exception as e:   # the resolver raises ValueError, URLError, OpError, ... by cause
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise StrategyError(
                f"--strategy=tpu: cannot reach the TPU {tpu_address or '(none named)'!r}: {first_line}. "
                "Give --tpu=NAME of a Cloud TPU in this project and zone, or --tpu=local on a TPU VM") from e
    return distribute_utils.get_distribution_strategy(distribution_strategy=name)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns once every replica of every worker has reached this point (a collective all-reduce)."""
    strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True where checkpoints and summaries are written (worker 0 in multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())

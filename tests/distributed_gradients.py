"""Helper program for test_distributed.py: loss and gradients of one global batch under a strategy.

    python distributed_gradients.py MODE CONFIG_YAML OUT_NPZ [INITIAL_WEIGHTS_NPZ]

MODE is `single` (one device; writes the initial weights too), `mirrored` (2 logical CPU devices)
or `worker` (MultiWorkerMirroredStrategy from TF_CONFIG, one replica per process). Every mode sees
the same global batch of 4 images; replica i gets images 2i and 2i+1.
"""
import sys

import numpy as np

import mobiledets_tf  # noqa: F401
import tensorflow as tf

from mobiledets_tf.config import load_config
from mobiledets_tf.keras import keras
from mobiledets_tf.training.strategy import make_strategy, split_cpu
from mobiledets_tf.training.task import DetectionTask

GLOBAL_BATCH = 4


def main(mode, config_path, out_path, weights_path=None):
    # float64 everywhere in the model: the comparison then measures the distribution logic, not
    # float32 rounding (synchronized BatchNorm computes E[x^2] - E[x]^2, the fused kernel does not).
    keras.mixed_precision.set_global_policy("float64")
    if mode == "mirrored":
        split_cpu(2)
    strategy = make_strategy({"single": "default", "mirrored": "mirrored",
                              "worker": "multi_worker_mirrored"}[mode])
    config = load_config(config_path, ["model.sync_batch_norm=true,data.ssd_random_crop=false"])
    task = DetectionTask(config, strategy)
    if weights_path:
        weights = np.load(weights_path)
        task.model.set_weights([weights[f"w{i}"] for i in range(len(weights.files))])
    else:
        np.savez(out_path.replace(".npz", "_weights.npz"),
                 **{f"w{i}": w for i, w in enumerate(task.model.get_weights())})

    images, targets = next(iter(task.train_dataset_fn(None).unbatch().batch(GLOBAL_BATCH)))
    per_replica = GLOBAL_BATCH // strategy.num_replicas_in_sync

    def replica_slice(context):
        start = context.replica_id_in_sync_group * per_replica
        return (images[start:start + per_replica],
                {k: v[start:start + per_replica] for k, v in targets.items()})

    inputs = strategy.experimental_distribute_values_from_function(replica_slice)
    variables = task.model.trainable_variables

    @tf.function
    def loss_and_gradients(inputs):
        def replica_fn(images, targets):
            with tf.GradientTape() as tape:
                loss = task.replica_losses(images, targets)["total_loss"]
            return loss, tape.gradient(loss, variables)

        loss, gradients = strategy.run(replica_fn, args=inputs)
        total = lambda value: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
        return total(loss), [total(g) for g in gradients]

    loss, gradients = loss_and_gradients(inputs)
    np.savez(out_path, loss=loss.numpy(), **{f"g{i}": g.numpy() for i, g in enumerate(gradients)})
    print(f"{mode}: {strategy.num_replicas_in_sync} replica(s), loss {float(loss):.6f}")


if __name__ == "__main__":
    main(*sys.argv[1:])

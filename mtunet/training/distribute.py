"""Choosing a tf.distribute strategy: one device, several GPUs, a TPU, or several machines."""

import json
import logging
import os

import tensorflow as tf

from mtunet.errors import ConfigError

from mtunet.options import STRATEGIES

logger = logging.getLogger(__name__)


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose ``reduce`` takes what Keras 3's ``fit`` gives it.

    Keras 3 (keras-team/keras#20585) calls ``reduce`` on a nested batch ``(images, {"label": ..., "mask": ...})``,
    which MirroredStrategy maps over but MultiWorkerMirroredStrategy does not, and with ``axis=0`` on the scalar
    loss and metrics of a step, which have no axis 0. This maps ``reduce`` over the structure and reduces scalars
    across replicas only.
    """

    def reduce(self, reduce_op, value, axis):
        def reduce_one(per_replica):
            scalar = self.experimental_local_results(per_replica)[0].shape.rank == 0
            return super(_MultiWorkerMirroredStrategy, self).reduce(reduce_op, per_replica, None if scalar else axis)

        return tf.nest.map_structure(reduce_one, value)


def _tpu_strategy():
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _tpu_reachable() -> bool:
    # Colab and Cloud TPU VMs announce themselves through these variables; probing the resolver elsewhere is slow.
    return bool(os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME"))


def select_strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy ``name`` asks for.

    ``auto``: a TPU when one is reachable, MirroredStrategy over several visible GPUs, else the default strategy.
    ``mirrored``: MirroredStrategy over the visible GPUs, or over the logical CPU devices when there is no GPU.
    ``multi_worker``: MultiWorkerMirroredStrategy, configured by the ``TF_CONFIG`` environment variable.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; expected one of: {', '.join(STRATEGIES)}")
    if name == "auto":
        if _tpu_reachable():
            name = "tpu"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    logger.debug("distribution strategy: %s", name)
    if name == "tpu":
        try:
            return _tpu_strategy()
        except (ValueError, tf.errors.OpError) as error:
            raise ConfigError(f"--strategy tpu: no TPU could be reached ({error})") from None
    if name == "mirrored":
        # without a GPU, mirror over the logical CPU devices: one, unless the CPU was split into several
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(None if tf.config.list_logical_devices("GPU") else cpus)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("--strategy multi_worker needs the TF_CONFIG environment variable (cluster and task)")
        return _MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """Whether this process writes the run's files: always, except on non-chief workers of a TF_CONFIG cluster."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    cluster = config.get("cluster", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return "chief" not in cluster and task.get("type") == "worker" and int(task.get("index", 0)) == 0

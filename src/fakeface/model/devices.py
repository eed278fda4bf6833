"""Where training runs and with which GPU settings: resolved once, applied, and read back.

``train.mixed_precision``, ``train.xla``, ``train.deterministic`` and ``train.augment_on`` say
``auto`` by default, and what that means depends on the machine: a GPU turns mixed precision, XLA
and augmentation inside the training step on, and deterministic ops off (they cost speed there,
and some GPU ops have no deterministic kernel). :func:`resolve` turns the params and the machine
into one :class:`DeviceSettings`; :func:`apply` sets TensorFlow and Keras up for it; after the
model is compiled, :func:`effective_settings` reads back what Keras and TensorFlow really use,
which is what a run's tags record (a setting Keras overrules must not be reported as on).

XLA and deterministic ops exclude each other: Keras compiles without XLA whenever TensorFlow's
deterministic ops are on. So both set to ``on`` is refused when the params are read, and when
one of them is ``auto`` it yields to the one that is set.

Replicas: every visible GPU is a replica of a ``MirroredStrategy``. Without a GPU, the runtime's
``cpu_replicas`` (``FAKEFACE_CPU_REPLICAS``) splits the CPU into that many logical devices, so the
multi-replica code (batches split across replicas, metrics aggregated, checkpoints and resume
under a strategy) runs on any machine. TensorFlow fixes its devices when its runtime starts, so
the split happens before anything else in the process touches TensorFlow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf
# The only way to turn determinism off again and to read it; Keras imports the same module.
from tensorflow.python.framework import config as tf_config

from fakeface import FakefaceError
from fakeface.config import TrainConfig

log = logging.getLogger(__name__)


class DeviceError(FakefaceError):
    """Devices that cannot be set up as asked (a CPU split after TensorFlow started)."""


@dataclass(frozen=True)
class DeviceSettings:
    """What the params resolve to on this machine."""

    gpus: int
    mixed_precision: bool
    xla: bool
    deterministic: bool
    augment_on_device: bool
    #: Logical CPU devices to split the CPU into (1: no split; ignored when a GPU is present).
    cpu_replicas: int = 1


def _switch(setting: str, auto: bool) -> bool:
    return setting == "on" or (setting == "auto" and auto)


def resolve(cfg: TrainConfig, gpus: int, cpu_replicas: int = 1) -> DeviceSettings:
    """The settings ``cfg`` asks for on a machine with ``gpus`` GPUs (see the module docstring)."""
    gpu = gpus > 0
    xla = _switch(cfg.xla, gpu) and not (cfg.xla == "auto" and cfg.deterministic == "on")
    deterministic = _switch(cfg.deterministic, not gpu) and not (cfg.deterministic == "auto" and xla)
    return DeviceSettings(
        gpus=gpus,
        mixed_precision=_switch(cfg.mixed_precision, gpu),
        xla=xla,
        deterministic=deterministic,
        augment_on_device=cfg.augment_on == "device" or (cfg.augment_on == "auto" and gpu),
        cpu_replicas=1 if gpu else max(1, cpu_replicas),
    )


def split_cpu(replicas: int) -> list[str]:
    """Split the CPU into ``replicas`` logical devices (before TensorFlow starts); their names."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError:
        present = tf.config.list_logical_devices("CPU")
        if len(present) != replicas:
            raise DeviceError(
                f"cannot split the CPU into {replicas} replicas: TensorFlow already started in this "
                f"process with {len(present)} CPU device(s); set FAKEFACE_CPU_REPLICAS={replicas} in "
                "the environment of a fresh process (or --cpu-replicas on the command line)"
            ) from None
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def apply(settings: DeviceSettings, seed: int) -> tf.distribute.Strategy:
    """Seed everything, set determinism and the dtype policy, and return the strategy to build
    and train the model under."""
    devices = split_cpu(settings.cpu_replicas) if settings.cpu_replicas > 1 else []
    keras.utils.set_random_seed(seed)
    # TensorFlow keeps determinism for the whole process; a run that asks for speed switches it
    # off again (Keras reads the same switch to decide on XLA).
    if settings.deterministic:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if settings.mixed_precision else "float32")
    if settings.gpus > 1:
        strategy: tf.distribute.Strategy = tf.distribute.MirroredStrategy()
    elif devices:
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        strategy = tf.distribute.get_strategy()
    log.info(
        "devices: %d GPU(s), %s over %d replica(s); mixed precision %s, XLA %s, deterministic ops %s",
        settings.gpus, type(strategy).__name__, strategy.num_replicas_in_sync,
        *("on" if flag else "off" for flag in (settings.mixed_precision, settings.xla, settings.deterministic)),
    )
    return strategy


def determinism_enabled() -> bool:
    """Whether TensorFlow's deterministic ops are on (the switch Keras itself reads)."""
    return bool(tf_config.is_op_determinism_enabled())


def effective_settings(model: keras.Model, placement: str) -> dict[str, Any]:
    """What a compiled ``model`` really trains with, read from Keras and TensorFlow.

    ``placement`` is the augmentation plan's ``name:place`` list
    (:meth:`fakeface.data.pipeline.AugmentationPlan.describe`).
    """
    strategy = model.distribute_strategy
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        replica_devices = list(strategy.extended.worker_devices)
    else:  # the default strategy: TensorFlow's default device, the first GPU or else the CPU
        replica_devices = [(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0].name]
    return {
        "xla": bool(model.jit_compile),
        "mixed_precision": model.dtype_policy.name,
        "deterministic": determinism_enabled(),
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "devices": ",".join(replica_devices),
        "augmentations": placement,
    }


def settings_tags(settings: dict[str, Any]) -> dict[str, str]:
    """``fakeface.<name>`` run tags of :func:`effective_settings` (booleans as true/false)."""
    return {f"fakeface.{name}": str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in settings.items()}

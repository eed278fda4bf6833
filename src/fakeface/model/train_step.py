"""The training step when augmentations run on the device: augment, then the XLA-compiled step.

With ``train.augment_on: device`` the input pipeline only decodes (and does what
:func:`fakeface.data.pipeline.plan_augmentations` keeps there); each batch carries every image's seed, and
the step applies the rest with the same stateless ops and seeds, so the images the model learns
from are the ones the CPU pipeline would give.

XLA cannot compile every augmentation (the antialiased resize, rotations' projective transform,
JPEG coding), and a Keras model compiled with ``jit_compile=True`` compiles its whole step. So
the step is split: the augmentation runs first, as ordinary TensorFlow ops on the device (or, for
an op with no device kernel, on the CPU), then the forward and backward pass, where the time goes,
is one XLA-compiled function, and the optimizer and metrics run last, outside it. The optimizer
stays outside because under a ``MirroredStrategy`` it aggregates the replicas' gradients, which a
compiled function nested inside a replica's step may not do. ``model.jit_compile`` keeps saying
what Keras decided (it refuses XLA for some layers and under deterministic ops), and that is what
the compiled part follows.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from fakeface.data.augmentations import build_augmenter
from fakeface.config import AugmentConfig


class AugmentingTrainer(keras.Model):
    """Trains ``classifier`` on batches ``((images, seeds), labels)`` it augments itself.

    It holds the classifier (and so shares its weights) and adds no layer: the classifier is what
    gets saved. Called on plain images (validation, prediction) it is the classifier.
    """

    def __init__(self, classifier: keras.Model, augment: AugmentConfig) -> None:
        super().__init__(name=classifier.name)
        self.classifier = classifier
        self.augmenter = build_augmenter(augment)
        self._gradients = self._loss_and_gradients
        self.built = True  # no weights of its own: the classifier's are built already

    def call(self, inputs: Any, training: bool | None = None) -> tf.Tensor:
        if isinstance(inputs, (tuple, list)):  # (images, seeds): the seeds only steer augmentation
            inputs = inputs[0]
        return self.classifier(inputs, training=training)

    def make_train_function(self, force: bool = False):
        """Keras' step function, run as ordinary graph ops; the gradient part compiled by XLA when
        Keras decided on XLA (see the module docstring)."""
        xla = bool(self.jit_compile)
        self._gradients = (
            tf.function(self._loss_and_gradients, jit_compile=True) if xla else self._loss_and_gradients
        )
        self.jit_compile = False
        try:
            return super().make_train_function(force)
        finally:
            self.jit_compile = xla

    def _loss_and_gradients(self, images: tf.Tensor, labels: tf.Tensor):
        with tf.GradientTape() as tape:
            predictions = self(images, training=True)
            loss = self.compute_loss(x=images, y=labels, y_pred=predictions, training=True)
            scaled = self.optimizer.scale_loss(loss)  # mixed precision: a loss-scaled gradient
        return loss, predictions, tape.gradient(scaled, self.trainable_weights)

    def augment_batch(self, images: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
        """Each image augmented with its own seed (what the CPU pipeline computes per image)."""
        return tf.map_fn(lambda item: self.augmenter(item[0], item[1]), (images, seeds),
                         fn_output_signature=tf.float32)

    def train_step(self, data):
        (images, seeds), labels = data
        images = self.augment_batch(images, seeds)
        loss, predictions, gradients = self._gradients(images, labels)
        # As Keras' own step: the "loss" metric is the replica's loss scaled back to the global batch.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        self._loss_tracker.update_state(loss * replicas, sample_weight=tf.shape(images)[0])
        self.optimizer.apply(gradients, self.trainable_weights)
        return self.compute_metrics(images, labels, predictions)

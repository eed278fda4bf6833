"""Parameters of the train stage (``train``): backbone, head, optimiser, the two phases."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from fakeface.config.base import Section


Auto = Literal["auto", "on", "off"]


class TrainConfig(Section):
    backbone: str = Field("smallcnn", description="a registered backbone (fakeface.model.backbones)")
    weights: str = Field("none", description="imagenet | none | path to a weights file")
    image_size: int | None = Field(None, ge=16, le=1024, description="null: the backbone default")
    crop_size: int | None = Field(None, ge=16, le=1024, description="train on random crop_size windows, score the "
                                  "centre window (a layer in the model): no resampling; null: the whole image")
    test_crops: Literal[1, 5] = Field(1, description="windows scored and averaged: 1, the centre; 5, the centre "
                                      "and the four corners (layers in the saved model); needs crop_size")
    input_transform: str = Field("pixels", description="what the network sees: pixels | npr (x - up2(x[::2, ::2])) | "
                                 "highpass (Haar HH, half size); a layer inside the model (fakeface.model.inputs)")
    batch_size: int = Field(32, ge=1, description="images per step")
    head_activation: Literal["sigmoid", "softmax"] = Field(
        "sigmoid", description="sigmoid: 1 unit, binary CE; softmax: 2 units, categorical CE"
    )
    head_units: int | None = Field(None, ge=1, le=2, description="null: 1 for sigmoid, 2 for softmax")
    pooling: Literal["avg", "max"] = Field("avg", description="global pooling of the base's features")
    dropout: float = Field(0.2, ge=0, lt=1, description="before the head")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="sgd (with momentum) or adam")
    momentum: float = Field(0.9, ge=0, lt=1, description="of sgd")
    learning_rate: float = Field(0.01, gt=0, le=1, description="phase 1")
    lr_schedule: Literal["constant", "cosine", "exponential"] = Field(
        "constant", description="over each phase's steps"
    )
    head_epochs: int = Field(1, ge=0, description="phase 1: base frozen, head only")
    fine_tune_epochs: int = Field(11, ge=0, description="phase 2: top layers unfrozen")
    fine_tune_layers: int = Field(0, ge=0, description="top layers to unfreeze; 0 = all")
    fine_tune_learning_rate: float = Field(0.003, gt=0, le=1, description="phase 2")
    early_stopping_patience: int = Field(
        4, ge=1, description="epochs without a better validation AUC; the best weights are restored"
    )
    shuffle_buffer: int = Field(2048, ge=1, description="images in the seeded shuffle buffer")
    mixed_precision: Auto = Field("auto", description="auto: on when a GPU is present")
    xla: Auto = Field("auto", description="auto: on when a GPU is present")
    deterministic: Auto = Field(
        "auto", description="deterministic ops, bit-exact runs for a seed; auto: on without a GPU, off on one (speed) "
        "or with xla=on (they exclude each other)"
    )
    cache: Literal["none", "memory", "disk"] = Field(
        "none", description="decoded uint8 images cached after the first epoch: memory (refused if it would "
        "not fit; 140k at 256 px is 27 GB) or disk (the runtime's cache folder); none decodes every epoch"
    )
    augment_on: Literal["auto", "cpu", "device"] = Field(
        "auto", description="where computing augmentations run: the CPU input pipeline, or the device in the "
        "training step (those after the last one without a GPU kernel); auto: device when a GPU is present"
    )

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        if value.lower() in ("imagenet", "none", "null", ""):
            return "none" if value.lower() in ("none", "null", "") else "imagenet"
        if not value.endswith((".h5", ".keras", ".weights.h5")):
            raise ValueError(
                f"must be 'imagenet', 'none' or a path to a .h5 / .weights.h5 file, got {value!r}"
            )
        return value

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        from fakeface.model.backbones import BACKBONES  # local import: keras is heavy

        key = value.lower()
        if key not in BACKBONES:
            raise ValueError(f"{value!r} is not allowed; expected one of {', '.join(sorted(BACKBONES))}")
        return key

    @field_validator("input_transform")
    @classmethod
    def _known_transform(cls, value: str) -> str:
        from fakeface.model.inputs import TRANSFORMS  # imports nothing heavy

        if value not in TRANSFORMS:
            raise ValueError(f"{value!r} is not allowed; expected one of {', '.join(TRANSFORMS)}")
        return value

    @model_validator(mode="after")
    def _head(self) -> TrainConfig:
        units = self.resolved_head_units
        if self.head_activation == "softmax" and units == 1:
            raise ValueError(
                "head_units=1 with head_activation=softmax is refused: a softmax over one unit "
                "always outputs 1.0, so the model predicts 'fake' for every image (it scored 50% "
                "in the seed project's ablation). Use sigmoid with 1 unit or softmax with 2 units."
            )
        if self.head_activation == "sigmoid" and units == 2:
            raise ValueError(
                "head_units=2 with head_activation=sigmoid is refused: two independent sigmoids "
                "do not form one probability. Use sigmoid with 1 unit or softmax with 2 units."
            )
        self._check_windows()
        if self.head_epochs + self.fine_tune_epochs == 0:
            raise ValueError("head_epochs + fine_tune_epochs must be at least 1")
        if self.xla == "on" and self.deterministic == "on":
            raise ValueError(
                "xla=on with deterministic=on is refused: Keras compiles without XLA whenever "
                "TensorFlow's deterministic ops are on, so one of them would silently not apply. "
                "Choose one (or leave the other at auto)."
            )
        return self

    def _check_windows(self) -> None:
        """The window the network sees fits the image; averaged windows need room to move."""
        from fakeface.model.backbones import get_backbone

        size = self.image_size or get_backbone(self.backbone).default_size
        if self.crop_size and self.crop_size > size:
            raise ValueError(f"crop_size {self.crop_size} is larger than the image size {size}")
        if self.test_crops > 1 and not (self.crop_size and self.crop_size < size):
            raise ValueError(f"test_crops={self.test_crops} averages windows of crop_size, which must be smaller "
                             f"than the image ({size} px): set crop_size below it, or test_crops=1")

    @property
    def resolved_head_units(self) -> int:
        if self.head_units is not None:
            return self.head_units
        return 1 if self.head_activation == "sigmoid" else 2



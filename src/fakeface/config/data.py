"""Parameters of the data stages: ingest (``data``) and eda (``eda``)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from fakeface.config.base import Section


class SplitFractions(Section):
    """Fractions for sources that have no split of their own (a plain real/ + fake/ folder)."""

    train: float = Field(0.8, gt=0, lt=1, description="fraction for training")
    valid: float = Field(0.1, gt=0, lt=1, description="fraction for validation (early stopping, the threshold)")
    test: float = Field(0.1, gt=0, lt=1, description="fraction for the test metrics")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + valid + test must sum to 1, got {total:g}")
        return self


class SyntheticConfig(Section):
    """The embedded default data set (see :mod:`fakeface.data.synthetic`)."""

    images_per_class: int = Field(500, ge=10, description="per class, over all splits")
    image_size: int = Field(64, ge=16, le=1024, description="side of the square images, px")
    jpeg_quality: int = Field(92, ge=50, le=100, description="the same for both classes")


#: The most pixels an image may have before it is refused as a decompression bomb (40 MP: a
#: 6,300 px square, far beyond any face data set); ``data.max_pixels`` and every scorer's default.
MAX_PIXELS = 40_000_000


class DataConfig(Section):
    source: str | list[str] = Field(
        "synthetic",
        description="synthetic | a folder | a .zip | a .csv | kaggle:<owner>/<dataset>, or a list "
        "of them combined into one manifest (its source column says which each row came from)",
    )
    split: SplitFractions = SplitFractions()
    max_pixels: int = Field(
        MAX_PIXELS, ge=1, description="larger images are quarantined (decompression bombs)"
    )
    max_archive_bytes: int = Field(
        64 << 30,
        ge=1,
        description="a .zip source writes at most this many bytes in all (archive bombs); one member "
        "at most 8 bytes x max_pixels + 4 MiB; larger members are quarantined as too_large",
    )
    synthetic: SyntheticConfig = SyntheticConfig()
    test_source: str | None = Field(
        None,
        description="cross-dataset evaluation: the source name (manifest source column) whose "
        "images alone form the test split; the other sources give train and valid",
    )
    artifact_categories: list[str] = Field(
        default_factory=list,
        description="ArtiFact categories to keep (e.g. [human_faces]); empty = every category",
    )

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else list(value)
        if not texts or any(not text.strip() for text in texts):
            raise ValueError("must name a source: synthetic, a folder, a .zip, a .csv or kaggle:<id>")
        texts = [text.strip() for text in texts]
        if len(set(texts)) != len(texts):
            raise ValueError(f"a source is listed twice: {texts}")
        if isinstance(value, str) or len(texts) == 1:
            return texts[0]  # a one-item list is the same as the string
        return texts

    @model_validator(mode="after")
    def _cross_dataset(self) -> DataConfig:
        if self.test_source is not None and len(self.sources) < 2:
            raise ValueError(
                "test_source (train on some sources, test on another) needs data.source to be a "
                "list of at least two sources"
            )
        return self

    @property
    def sources(self) -> list[str]:
        """``source`` as a list (one item for a single source)."""
        return [self.source] if isinstance(self.source, str) else list(self.source)


# --------------------------------------------------------------------------- eda


class EdaConfig(Section):
    sample_per_class: int = Field(200, ge=1, description="images per class for pixel statistics")
    grid_images: int = Field(16, ge=1, le=64, description="images per class in the sample grid")
    spectrum_size: int = Field(64, ge=16, le=512, description="side of the Fourier spectra")



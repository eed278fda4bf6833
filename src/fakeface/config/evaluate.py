"""Parameters of evaluate (threshold, robustness, slices, explanations), register and tracking."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from fakeface.config.base import Section
from fakeface.config.robustness import Perturbation, check_kinds, default_robustness


class SlicesConfig(Section):
    """Brightness bands by mean luma (0..255) of the decoded image: dark < a <= mid < b <= bright."""

    brightness_edges: tuple[float, float] = Field(
        (85.0, 170.0), description="mean luma: dark < first <= mid < second <= bright"
    )

    @field_validator("brightness_edges")
    @classmethod
    def _ascending(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] < value[1] < 255:
            raise ValueError(f"need 0 < dark/mid edge < mid/bright edge < 255, got {list(value)}")
        return value


class ExplainConfig(Section):
    """Integrated gradients (Sundararajan et al. 2017) for a few test images per class."""

    enabled: bool = Field(True, description="integrated-gradients heatmaps for a few test images")
    images_per_class: int = Field(2, ge=0, le=50, description="right and wrong ones when available")
    baseline: Literal["black", "noise"] = Field("black", description="the image IG starts from")
    steps: int = Field(64, ge=20, le=1000, description="interpolation steps m (trapezoidal rule)")
    batch_size: int = Field(32, ge=1, description="interpolated images per gradient batch")
    seed: int = Field(0, ge=0, description="for the noise baseline")


class EvaluateConfig(Section):
    threshold: float = Field(0.5, gt=0, lt=1, description="p(fake) at or above which we say fake")
    threshold_method: Literal["fixed", "max_f1", "youden"] = Field(
        "max_f1", description="fixed: use threshold; max_f1 / youden: chosen on the valid split"
    )
    batch_size: int = Field(64, ge=1, description="images per prediction batch")
    calibration_bins: int = Field(10, ge=2, le=100, description="equal-width bins for ECE and the reliability plot")
    robustness_max_images: int = Field(
        1000, ge=0, description="test images for the robustness checks (evenly spaced); 0 = all"
    )
    robustness: dict[str, Perturbation] = Field(default_factory=default_robustness)
    external: dict[str, str] = Field(
        default_factory=dict,
        description="labelled sets from elsewhere, name: source (any source ingest reads), each scored "
        "whole with the test table, its real images' false-positive rate and the robustness checks",
    )
    slices: SlicesConfig = SlicesConfig()
    explain: ExplainConfig = ExplainConfig()

    @field_validator("robustness", mode="before")
    @classmethod
    def _kinds(cls, value: Any) -> Any:
        return check_kinds(value)  # the kinds come from fakeface.config.robustness's registry

    @field_validator("robustness")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            # no dots: the name is a key of dotted overrides (dvc exp run -S evaluate.robustness.NAME.enabled=false)
            if name == "none" or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
                raise ValueError(
                    f"perturbation name {name!r}: use letters, digits, '_' and '-' ('none' is the clean row)"
                )
        return value

    @field_validator("external")
    @classmethod
    def _external_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, source in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
                raise ValueError(f"external set name {name!r}: use letters, digits, '_' and '-'")
            if not str(source).strip():
                raise ValueError(f"external set {name!r}: needs a source")
        return value

    def enabled_perturbations(self) -> dict[str, Any]:
        return {name: spec for name, spec in self.robustness.items() if spec.enabled}


class RegisterConfig(Section):
    model_name: str = Field("fakeface-detector", min_length=1, description="registered model name in MLflow")
    alias: str = Field("champion", min_length=1, description="alias pointed at a version that passes the gate")
    min_test_auc: float = Field(0.8, ge=0, le=1, description="quality gate for registration")
    challenger_alias: str = Field("challenger", min_length=1,
                                  description="alias of a registered version that did not beat the champion")
    promotion_margin: float = Field(0.005, ge=0, le=1, description="a new version whose test AUC is below the "
                                    "champion's by more than this stays challenger")
    promotion_alpha: float = Field(0.05, gt=0, lt=1, description="a new version that DeLong's paired test finds "
                                   "worse than the champion at this level (one-sided) stays challenger")


class TrackingConfig(Section):
    """Where runs go. The tracking *URI* is not a param: it comes from MLFLOW_TRACKING_URI."""

    experiment: str = Field("fakeface", min_length=1, description="MLflow experiment (the URI comes from MLFLOW_TRACKING_URI)")



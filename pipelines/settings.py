"""Cluster settings of the Kubeflow pipeline: image, MLflow, credentials, resources, the GPU.

These are deployment facts, not model parameters, so they are not in ``params.yaml`` (whose
schema, :class:`fakeface.config.Params`, forbids unknown sections, and whose values are the run's
``params`` argument). They are fixed when the pipeline is compiled, from (highest first) the
``fakeface pipeline compile|submit`` options, the environment variables below, and the defaults::

    FAKEFACE_IMAGE               the project image            ghcr.io/fakeface/fakeface:<version>
    FAKEFACE_MLFLOW_URI          MLflow as pods reach it      http://mlflow.mlflow.svc.cluster.local:5000
    FAKEFACE_S3_ENDPOINT_URL     S3 endpoint (MinIO ...)      unset: AWS S3
    FAKEFACE_K8S_SECRET          Secret with the credentials  fakeface-credentials
    FAKEFACE_GPUS                GPUs for the train step      1 (0: CPU training)

No credential is ever a setting or a pipeline parameter: S3 keys and the MLflow login reach the
pods from the Kubernetes Secret (:data:`SECRET_KEYS`), and a tracking or S3 URI with
``user:password@`` in it is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from fakeface import FakefaceError
from fakeface.redact import has_credentials

DEFAULT_MLFLOW_URI = "http://mlflow.mlflow.svc.cluster.local:5000"
DEFAULT_SECRET = "fakeface-credentials"
#: Secret keys -> environment variables, and whether the key must exist in the Secret.
#: S3 keys are required (MLflow's artifact store, boto3); the MLflow login is optional (an
#: in-cluster MLflow often has no authentication).
SECRET_KEYS: tuple[tuple[str, bool], ...] = (
    ("AWS_ACCESS_KEY_ID", True),
    ("AWS_SECRET_ACCESS_KEY", True),
    ("MLFLOW_TRACKING_USERNAME", False),
    ("MLFLOW_TRACKING_PASSWORD", False),
)
#: Stages that talk to MLflow (and through it to S3): only these see the Secret.
MLFLOW_STAGES = ("eda", "train", "evaluate", "register")
#: Stages whose results KFP may reuse: they are pure functions of params and their inputs.
#: train/evaluate/register are not cached: each run must create its own MLflow run and model.
CACHED_STAGES = ("ingest", "eda", "augment", "preview")
STAGE_NAMES = ("ingest", "eda", "augment", "preview", "train", "evaluate", "register")


class SettingsError(FakefaceError):
    """A cluster setting that cannot be used (the message says which and why)."""


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests (and a memory limit) of one step's container."""

    cpu: str
    memory: str
    memory_limit: str | None = None


#: Sized for the 140k real-and-fake-faces set at 256 px with a pretrained backbone; the synthetic
#: default needs far less. The train step also gets the GPU(s).
DEFAULT_RESOURCES: Mapping[str, Resources] = {
    "ingest": Resources(cpu="2", memory="4Gi", memory_limit="8Gi"),
    "eda": Resources(cpu="1", memory="2Gi", memory_limit="4Gi"),
    "augment": Resources(cpu="2", memory="4Gi", memory_limit="8Gi"),
    "preview": Resources(cpu="1", memory="2Gi", memory_limit="4Gi"),
    "train": Resources(cpu="4", memory="16Gi", memory_limit="32Gi"),
    "evaluate": Resources(cpu="2", memory="8Gi", memory_limit="16Gi"),
    "register": Resources(cpu="1", memory="4Gi", memory_limit="8Gi"),
}


@dataclass(frozen=True)
class Toleration:
    key: str
    operator: str = "Exists"  # Exists | Equal
    value: str | None = None
    effect: str | None = "NoSchedule"  # NoSchedule | PreferNoSchedule | NoExecute | None (all)

    @classmethod
    def parse(cls, text: str) -> Toleration:
        """``key[=value][:effect]``: ``nvidia.com/gpu:NoSchedule``, ``dedicated=gpu:NoSchedule``."""
        spec, _, effect = text.partition(":")
        key, eq, value = spec.partition("=")
        if not key:
            raise SettingsError(f"toleration {text!r}: expected key[=value][:effect]")
        effects = ("NoSchedule", "PreferNoSchedule", "NoExecute")
        if effect and effect not in effects:
            raise SettingsError(f"toleration {text!r}: effect must be one of {', '.join(effects)}")
        return cls(key=key, operator="Equal" if eq else "Exists", value=value if eq else None,
                   effect=effect or None)


def _default_image() -> str:
    from components import stages

    return os.environ.get("FAKEFACE_IMAGE") or stages.IMAGE


@dataclass(frozen=True)
class KubeflowSettings:
    image: str = field(default_factory=_default_image)
    mlflow_tracking_uri: str = DEFAULT_MLFLOW_URI
    s3_endpoint_url: str | None = None
    secret_name: str = DEFAULT_SECRET
    gpu_count: int = 1
    accelerator_type: str = "nvidia.com/gpu"
    #: Node labels the train step needs (the NVIDIA GPU operator labels GPU nodes like this).
    gpu_node_selector: tuple[tuple[str, str], ...] = (("nvidia.com/gpu.present", "true"),)
    #: Taints the train step tolerates (GPU node pools are commonly tainted nvidia.com/gpu).
    gpu_tolerations: tuple[Toleration, ...] = (Toleration("nvidia.com/gpu"),)
    resources: Mapping[str, Resources] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not self.image:
            raise SettingsError("image: must name the project image, e.g. ghcr.io/fakeface/fakeface:0.1.0")
        for name, uri in (("MLflow tracking URI", self.mlflow_tracking_uri),
                          ("S3 endpoint URL", self.s3_endpoint_url or "")):
            if has_credentials(uri):
                raise SettingsError(
                    f"{name} holds credentials (user:password@); it would be written into the "
                    f"compiled pipeline. Put them in the Kubernetes Secret {self.secret_name!r} "
                    "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) instead."
                )
        if self.gpu_count < 0:
            raise SettingsError(f"gpu_count must be 0 or more, got {self.gpu_count}")
        missing = [name for name in STAGE_NAMES if name not in self.resources]
        if missing:
            raise SettingsError(f"resources: no requests for stage(s) {missing}")

    @classmethod
    def from_env(cls, **overrides) -> KubeflowSettings:
        """Defaults, then ``FAKEFACE_*`` environment variables, then ``overrides`` (not None)."""
        values: dict = {}
        env = {
            "image": os.environ.get("FAKEFACE_IMAGE"),
            "mlflow_tracking_uri": os.environ.get("FAKEFACE_MLFLOW_URI"),
            "s3_endpoint_url": os.environ.get("FAKEFACE_S3_ENDPOINT_URL"),
            "secret_name": os.environ.get("FAKEFACE_K8S_SECRET"),
            "gpu_count": os.environ.get("FAKEFACE_GPUS"),
        }
        for key, value in {**env, **overrides}.items():
            if value is not None and value != "":
                values[key] = value
        if "gpu_count" in values:
            try:
                values["gpu_count"] = int(values["gpu_count"])
            except ValueError:
                raise SettingsError(f"gpu count must be an integer, got {values['gpu_count']!r}") from None
        return cls(**values)

    def for_local(self, mlflow_tracking_uri: str) -> KubeflowSettings:
        """The same pipeline for ``kfp.local``: only where MLflow is differs (a local store).

        Everything else stays: the local runner runs the PipelineSpec and ignores the Kubernetes
        platform spec (Secret, node selector, tolerations) by design, and warns that the resource
        requests have no effect, so the graph that runs locally is the one a cluster runs.
        """
        return replace(self, mlflow_tracking_uri=mlflow_tracking_uri, s3_endpoint_url=None)

    def env(self) -> dict[str, str]:
        """Plain (non-secret) environment of every step."""
        env = {
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "FAKEFACE_LOG_LEVEL": self.log_level,
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        if self.s3_endpoint_url:
            env["MLFLOW_S3_ENDPOINT_URL"] = self.s3_endpoint_url
            env["AWS_ENDPOINT_URL_S3"] = self.s3_endpoint_url
        return env

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

from kfp import dsl
from kfp import kubernetes as k8s

from fakeface import FakefaceError
from fakeface.tracking.redact import has_credentials

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
#: Steps that reach the network (a Kaggle download, MLflow, S3) and so can fail for a moment:
#: retried with exponential backoff. Train resumes from its checkpoints on the volume.
RETRIED_STAGES = ("ingest", "eda", "train", "evaluate", "register")
#: The longest each step may run (seconds), sized for the 140k set on one GPU; then it is failed
#: (and, where retried, tried again) instead of holding a node for ever.
DEFAULT_TIMEOUTS: Mapping[str, int] = {
    "ingest": 4 * 3600, "eda": 3600, "augment": 2 * 3600, "preview": 1800,
    "train": 24 * 3600, "evaluate": 4 * 3600, "register": 3600,
}
#: The non-root user of the project image (Dockerfile): pods run as it.
IMAGE_UID = 10001
#: Where the checkpoint volume is mounted in the train pod; FAKEFACE_CHECKPOINT_DIR points there.
CHECKPOINT_MOUNT = "/checkpoints"
DEFAULT_CHECKPOINT_PVC = "fakeface-checkpoints"
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
    from fakeface.components import stages

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
    #: Retries of a step in RETRIED_STAGES, and the first wait (doubling, at most an hour).
    retries: int = 3
    retry_backoff_seconds: int = 60
    timeouts: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    #: A PersistentVolumeClaim for train's checkpoints, so a restarted or retried pod resumes at its
    #: last finished epoch instead of starting over; None: checkpoints in the pod's scratch folder.
    checkpoint_pvc: str | None = DEFAULT_CHECKPOINT_PVC
    #: More plain environment of every step (local runs: where MLflow is, as containers see it).
    extra_env: tuple[tuple[str, str], ...] = ()

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
        missing = [name for name in STAGE_NAMES if name not in self.timeouts]
        if missing:
            raise SettingsError(f"timeouts: none for stage(s) {missing}")
        if self.retries < 0 or self.retry_backoff_seconds < 1:
            raise SettingsError("retries must be 0 or more and the backoff at least 1 s")

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

    def for_local(self, mlflow_tracking_uri: str, extra_env: Mapping[str, str] | None = None) -> KubeflowSettings:
        """The same pipeline for ``kfp.local``: only where MLflow is differs (a local store, or a
        server on this machine), and ``extra_env`` is added to every step.

        Everything else stays: the local runner runs the PipelineSpec and ignores the Kubernetes
        platform spec (Secret, node selector, tolerations, volume, timeout) by design, and warns
        that the resource requests have no effect, so the graph that runs locally is the one a
        cluster runs.
        """
        # No checkpoint volume: on this machine /checkpoints is no claim, and train's scratch
        # folder (or FAKEFACE_CHECKPOINT_DIR from extra_env) serves.
        return replace(self, mlflow_tracking_uri=mlflow_tracking_uri, s3_endpoint_url=None, checkpoint_pvc=None,
                       extra_env=tuple(sorted((extra_env or {}).items())))

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
        env.update(dict(self.extra_env))
        return env


def configure_task(name: str, task: dsl.PipelineTask, settings: KubeflowSettings) -> None:
    """A step's cluster settings: image, requests, env, caching, retries, timeout, non-root user;
    the GPU and the checkpoint volume for train; the Secret for the steps that reach MLflow."""
    resources = settings.resources[name]
    task.set_container_image(settings.image)
    task.set_cpu_request(resources.cpu)
    task.set_memory_request(resources.memory)
    if resources.memory_limit:
        task.set_memory_limit(resources.memory_limit)
    for key, value in settings.env().items():
        task.set_env_variable(key, value)
    task.set_caching_options(name in CACHED_STAGES)
    if name in RETRIED_STAGES and settings.retries:
        task.set_retry(
            num_retries=settings.retries, backoff_duration=f"{settings.retry_backoff_seconds}s",
            backoff_factor=2.0, backoff_max_duration="3600s",
        )
    k8s.set_timeout(task, settings.timeouts[name])
    k8s.set_security_context(task, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID, run_as_non_root=True)

    if name == "train" and settings.checkpoint_pvc:
        k8s.mount_pvc(task, pvc_name=settings.checkpoint_pvc, mount_path=CHECKPOINT_MOUNT)
        task.set_env_variable("FAKEFACE_CHECKPOINT_DIR", CHECKPOINT_MOUNT)
    if name == "train" and settings.gpu_count > 0:
        task.set_accelerator_type(settings.accelerator_type)
        task.set_accelerator_limit(settings.gpu_count)
        for label, value in settings.gpu_node_selector:
            k8s.add_node_selector(task, label_key=label, label_value=value)
        for toleration in settings.gpu_tolerations:
            k8s.add_toleration(
                task, key=toleration.key, operator=toleration.operator, value=toleration.value,
                effect=toleration.effect,
            )
    if name in MLFLOW_STAGES:
        # Key names only: the values stay in the cluster. Two mounts, so that the MLflow login may
        # be absent from the Secret while the S3 keys must be there.
        for required in (True, False):
            keys = {key: key for key, must in SECRET_KEYS if must is required}
            if keys:
                k8s.use_secret_as_env(
                    task, secret_name=settings.secret_name, secret_key_to_env=keys, optional=not required
                )

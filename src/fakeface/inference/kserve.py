"""``fakeface deploy kserve``: an InferenceService manifest for the registered image-in champion.

KServe serves MLflow models with its MLServer runtime (``modelFormat: mlflow``, open inference
protocol v2): the storage initializer copies ``storageUri`` into the pod and MLServer loads it with
``mlflow.pyfunc.load_model``, so the pod runs the very pyfunc ``fakeface serve`` runs
(:mod:`fakeface.inference.served_model`; it carries its fakeface source, so the image needs MLServer,
``mlserver-mlflow``, MLflow and TensorFlow, not fakeface). The manifest is:

* a ServiceAccount that names the S3 credentials Secret (KServe's storage initializer reads the
  keys, and the Secret's ``serving.kserve.io/s3-*`` annotations, through it). The Secret itself is
  never written here: its values are the user's, created with ``kubectl create secret``;
* the InferenceService: ``storageUri`` is where the champion's files are in S3, resolved through
  MLflow (the model version's download URI; a proxied ``mlflow-artifacts:/`` location is mapped
  onto the tracking server's ``--artifacts-destination``, the stack's ``s3://<bucket>/mlartifacts``
  by default), with resources and replicas, and the Prometheus port of the runtime's metrics:
  MLServer serves them on a port of their own (:data:`METRICS_PORT`), not on the HTTP port 8080
  that KServe's ``kserve-mlserver`` runtime annotates, so the manifest annotates that port and
  sets it (``MLSERVER_METRICS_PORT``) so that the two cannot part.

The predictor image: the model's own ``requirements.txt`` (:func:`fakeface.inference.served_model.pip_requirements`)
plus :data:`MLSERVER_PACKAGES`. ``tests/test_mlserver.py`` builds exactly that as a virtualenv and
answers v2 requests with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fakeface import FakefaceError

#: Kubernetes names: an InferenceService name is a DNS-1035 label (KServe's webhook rule); a
#: namespace, ServiceAccount or Secret name a DNS-1123 label/subdomain.
ISVC_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|[KMGTPE]i?)?")
STORAGE_SCHEMES = ("s3", "gs", "https", "hdfs", "webhdfs", "pvc", "oci", "hf")
#: What the predictor image installs besides the model's requirements. uvloop: MLServer's parallel
#: inference workers die at start under uvloop 0.22 and later (the server then answers nothing);
#: MLServer asks for any uvloop, so the pin is the image's.
MLSERVER_PACKAGES = ("mlserver==1.7.1", "mlserver-mlflow==1.7.1", "uvloop<0.22")
#: MLServer's metrics port (its default), annotated for Prometheus and set in the container.
METRICS_PORT = 8082
METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class Champion:
    """A registered model version and where its files are."""

    name: str
    version: str
    download_uri: str
    detector: str | None = None  # the Keras model it wraps, "name vN", from its model_config


def resolve(model_uri: str) -> Champion:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` to its version and files."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from fakeface import tracking

    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    if not match:
        raise FakefaceError(f"--model {model_uri}: give models:/<name>@<alias> or models:/<name>/<version>")
    name, alias, number = match.groups()
    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
        download_uri = client.get_model_version_download_uri(name, version.version)
        config = mlflow.models.get_model_info(f"models:/{name}/{version.version}").flavors.get(
            "python_function", {}).get("config") or {}
    except mlflow.exceptions.MlflowException as error:
        raise FakefaceError(f"cannot resolve {model_uri}: {error.message}") from None
    detector = config.get("model_name") and f"{config['model_name']} v{config.get('model_version')}"
    return Champion(name, str(version.version), download_uri, detector or None)


def storage_uri(download_uri: str, artifacts_destination: str) -> str:
    """Where a cluster reads the model: the download URI itself when it is in object storage, a
    proxied ``mlflow-artifacts:`` path under ``artifacts_destination``; anything else (a local
    ``file:`` store) cannot be deployed."""
    parsed = urlparse(download_uri)
    if parsed.scheme in STORAGE_SCHEMES:
        return download_uri
    if parsed.scheme == "mlflow-artifacts":
        return f"{artifacts_destination.rstrip('/')}/{parsed.path.lstrip('/')}"
    raise FakefaceError(
        f"the model's files are at {download_uri}, which a cluster cannot read: register it through an MLflow "
        "server that keeps artifacts in S3 (fakeface stack up), or give --storage-uri"
    )


def _check(value: str, pattern: re.Pattern[str], what: str, limit: int = 63) -> str:
    if not pattern.fullmatch(value) or len(value) > limit:
        raise FakefaceError(f"{what} {value!r}: use lower-case letters, digits and '-' (at most {limit} characters)")
    return value


def manifest(champion: Champion, storage: str, *, name: str = "fakeface-detector", namespace: str = "default",
             service_account: str = "fakeface-serving", secret: str = "fakeface-s3", image: str | None = None,
             runtime: str | None = None, cpu: str = "1", memory: str = "2Gi", cpu_limit: str = "2",
             memory_limit: str = "4Gi", min_replicas: int = 1, max_replicas: int = 2,
             canary: int | None = None) -> list[dict[str, Any]]:
    """The ServiceAccount and the InferenceService, as Kubernetes objects.

    ``canary``: KServe's ``canaryTrafficPercent``. Applied over a running InferenceService of the
    same name, the new model gets that share of the traffic and the last ready revision the rest;
    applying it again with 100 (or without ``--canary``) promotes it, with 0 sends everything back.
    """
    _check(name, ISVC_NAME, "--name")
    _check(namespace, ISVC_NAME, "--namespace")
    _check(service_account, K8S_NAME, "--service-account", 253)
    _check(secret, K8S_NAME, "--secret", 253)
    for option, value in (("--cpu", cpu), ("--memory", memory), ("--cpu-limit", cpu_limit),
                          ("--memory-limit", memory_limit)):
        if not QUANTITY.fullmatch(value):
            raise FakefaceError(f"{option} {value!r}: a Kubernetes quantity such as 500m, 2, 512Mi or 4Gi")
    if not 0 <= min_replicas <= max_replicas or max_replicas < 1:
        raise FakefaceError(f"replicas: need 0 <= --min-replicas <= --max-replicas, >= 1; got {min_replicas}, {max_replicas}")
    if canary is not None and not 0 <= canary <= 100:
        raise FakefaceError(f"--canary {canary}: a share of the traffic in percent, 0 to 100")
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "fakeface"}
    annotations = {"fakeface/registered-model": f"{champion.name} v{champion.version}"}
    if champion.detector:
        annotations["fakeface/keras-model"] = champion.detector
    # the runtime's own annotation says 8080, MLServer's HTTP port; its metrics are elsewhere
    annotations["prometheus.kserve.io/port"] = str(METRICS_PORT)
    annotations["prometheus.kserve.io/path"] = METRICS_PATH
    model: dict[str, Any] = {
        "modelFormat": {"name": "mlflow"},
        "protocolVersion": "v2",
        "storageUri": storage,
        "env": [{"name": "MLSERVER_METRICS_PORT", "value": str(METRICS_PORT)},
                {"name": "MLSERVER_METRICS_ENDPOINT", "value": METRICS_PATH}],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}},
    }
    if runtime:
        model["runtime"] = runtime
    if image:
        model["image"] = image
    account = {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": service_account, "namespace": namespace, "labels": labels},
        "secrets": [{"name": secret}],
    }
    service = {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {"predictor": {"serviceAccountName": service_account, "minReplicas": min_replicas,
                               "maxReplicas": max_replicas, "model": model}},
    }
    if canary is not None:
        service["spec"]["predictor"]["canaryTrafficPercent"] = canary
    return [account, service]


def render(documents: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


def write_kserve(model_uri: str, out: str | Path | None, *, storage_override: str | None = None,
                 artifacts_destination: str | None = None, **options: Any) -> str:
    """Resolve ``model_uri``, build the manifest, write it to ``out`` (None or ``-``: return it for
    stdout). Returns the YAML text."""
    champion = resolve(model_uri)
    if storage_override:
        if urlparse(storage_override).scheme not in STORAGE_SCHEMES:
            raise FakefaceError(f"--storage-uri {storage_override}: give an s3://, gs:// or https:// location")
        storage = storage_override
    else:
        if artifacts_destination is None:
            from fakeface.stack import load_config

            artifacts_destination = load_config().artifacts_destination
        storage = storage_uri(champion.download_uri, artifacts_destination)
    text = render(manifest(champion, storage, **options))
    if out is not None and str(out) != "-":
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text

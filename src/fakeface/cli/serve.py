"""``fakeface serve`` and ``fakeface deploy kserve``: the registered image-in model over
HTTP here (:mod:`fakeface.inference.server`), and its KServe manifest (:mod:`fakeface.inference.kserve`)."""

from __future__ import annotations

import argparse
import sys

from fakeface import FakefaceError
from fakeface.config import Params
from fakeface.inference.kserve import MLSERVER_PACKAGES


def _model(args: argparse.Namespace, params: Params) -> str:
    from fakeface.inference.server import default_model_uri

    return args.model or default_model_uri(params.register.model_name, params.register.alias)


def _serve(args: argparse.Namespace, params: Params) -> None:
    from fakeface.inference.server import serve

    serve(_model(args, params), host=args.host, port=args.port, max_request_mb=args.max_request_mb,
          timeout_s=args.timeout, max_pixels=params.data.max_pixels, prediction_log=args.prediction_log,
          prediction_log_max_mb=args.prediction_log_max_mb, max_images=args.max_images,
          max_image_mb=args.max_image_mb, max_concurrency=args.max_concurrency)


def _deploy_kserve(args: argparse.Namespace, params: Params) -> None:
    from fakeface.inference.kserve import write_kserve

    text = write_kserve(
        _model(args, params), args.out, storage_override=args.storage_uri,
        artifacts_destination=args.artifacts_destination, name=args.name, namespace=args.namespace,
        service_account=args.service_account, secret=args.secret, image=args.image, runtime=args.runtime,
        cpu=args.cpu, memory=args.memory, cpu_limit=args.cpu_limit, memory_limit=args.memory_limit,
        min_replicas=args.min_replicas, max_replicas=args.max_replicas, canary=args.canary,
    )
    if args.out == "-":
        sys.stdout.write(text)
    else:
        sys.stderr.write(f"wrote {args.out}: kubectl apply -f {args.out}\n")


def _monitor(args: argparse.Namespace, params: Params) -> int:
    from pathlib import Path

    from fakeface.inference.monitor import monitor

    if args.last is not None and args.last < 1:
        raise FakefaceError(f"--last {args.last}: a number of records, at least 1")
    report = monitor(args.log, args.model or f"models:/{params.register.model_name}@{params.register.alias}",
                     Path(args.out), last=args.last, since_hours=args.since_hours, all_versions=args.all_versions,
                     alpha=args.alpha, max_psi=args.max_psi, min_images=args.min_images,
                     experiment=params.tracking.experiment)
    summary = report.summary
    result = summary.get("result")
    detail = (f"KS {result['ks_statistic']:.3f} (p {result['ks_p_value']:.2g}), PSI {result['psi']:.3f}, "
              f"{result['n_window']} images" if result else f"{summary['window']['records']} images")
    sys.stdout.write(f"{summary['status']}: {detail}; report {report.report}\n")
    return 1 if report.status == "drift" else 0


def add_serve_commands(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    from fakeface.inference.server import DEFAULT_HOST, DEFAULT_MAX_REQUEST_MB, DEFAULT_PORT, DEFAULT_TIMEOUT_S

    model_help = ("an MLflow URI of the image-in model, an MLflow model folder, or a detector .keras file "
                  "(default: models:/<register.model_name>-serving@<register.alias>)")
    text = ("serve the image-in model over HTTP (MLflow's scoring server): POST base64 JPEG/PNG/WebP images "
            "to /invocations, get p(fake) and a label each")
    p = sub.add_parser("serve", help=text, description=text)
    p.set_defaults(handler=_serve, params_optional=True)
    p.epilog = ('Request: {"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]}}, 1 to 64 '
                'images. Answer: {"predictions": [{"p_fake", "label", "threshold", "model_name", "model_version", '
                '"error"}, ...]}. Stop it with Ctrl-C.')
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    p.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_MB,
                   help="larger request bodies get 413 (default: %(default)s)")
    p.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S,
                   help="seconds a request may take before 504 (MLflow's MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT; "
                        "default: %(default)s)")
    p.add_argument("--max-images", type=int, default=None, help="images a request may hold (default: 64)")
    p.add_argument("--max-image-mb", type=float, default=None,
                   help="encoded size of one image; a larger one gets a too_large row (default: 8)")
    p.add_argument("--max-concurrency", type=int, default=None,
                   help="requests handled at once; more are answered 503 at once (default: no limit)")
    p.add_argument("--prediction-log", default=None, metavar="FOLDER|s3://BUCKET/PREFIX",
                   help="append one JSON record per scored image (time, model version, p(fake), label, sha256, "
                        "size; never the image) for fakeface monitor (default: off)")
    p.add_argument("--prediction-log-max-mb", type=float, default=512.0,
                   help="a day's local log file stops growing here; dropped records are counted (default: %(default)s)")

    text = ("compare the served p(fake) in a prediction log with the model's validation distribution "
            "(Kolmogorov-Smirnov, PSI); exit 1 on drift")
    m = sub.add_parser("monitor", help=text, description=text)
    m.set_defaults(handler=_monitor, params_optional=True)
    m.add_argument("--log", required=True, metavar="FOLDER|s3://BUCKET/PREFIX", help="fakeface serve's --prediction-log")
    m.add_argument("--model", default=None, help="the detector .keras file or a registered model URI "
                   "(default: models:/<register.model_name>@<register.alias>)")
    m.add_argument("--out", default="reports/monitor", help="report.json and drift.png (default: %(default)s)")
    m.add_argument("--last", type=int, default=None, help="the newest N scored records (default: all)")
    m.add_argument("--since-hours", type=float, default=None, help="records of the last H hours (default: all)")
    m.add_argument("--all-versions", action="store_true",
                   help="every model version's records (default: only the monitored version's)")
    m.add_argument("--alpha", type=float, default=0.01, help="KS test level (default: %(default)s)")
    m.add_argument("--max-psi", type=float, default=0.25, help="PSI above this is drift (default: %(default)s)")
    m.add_argument("--min-images", type=int, default=100,
                   help="fewer scored images than this: no verdict, exit 0 (default: %(default)s)")

    text = "write deployment manifests for the registered image-in model"
    deploy = sub.add_parser("deploy", help=text, description=text)
    targets = deploy.add_subparsers(dest="target", required=True, metavar="TARGET")
    text = ("KServe: a ServiceAccount naming the S3 credentials Secret and an InferenceService "
            "(serving.kserve.io/v1beta1, model format mlflow) whose storageUri is the model's S3 location")
    k = targets.add_parser("kserve", help=text, description=text)
    k.set_defaults(handler=_deploy_kserve, params_optional=True)
    k.add_argument("--model", default=None, help="models:/<name>@<alias> or models:/<name>/<version> "
                   "(default: models:/<register.model_name>-serving@<register.alias>)")
    k.add_argument("--out", default="-", help="manifest file; - prints it (default: %(default)s)")
    k.add_argument("--name", default="fakeface-detector", help="InferenceService name (default: %(default)s)")
    k.add_argument("--namespace", default="default", help="default: %(default)s")
    k.add_argument("--service-account", default="fakeface-serving", help="default: %(default)s")
    k.add_argument("--secret", default="fakeface-s3",
                   help="name of the Secret with the S3 keys (created by you; default: %(default)s)")
    k.add_argument("--image", default=None, help="predictor image: the model's requirements.txt plus "
                   f"{' '.join(MLSERVER_PACKAGES)} (default: the runtime's, which has no TensorFlow)")
    k.add_argument("--runtime", default=None, help="ServingRuntime name (default: KServe picks the mlflow one)")
    k.add_argument("--cpu", default="1", help="CPU request (default: %(default)s)")
    k.add_argument("--memory", default="2Gi", help="memory request (default: %(default)s)")
    k.add_argument("--cpu-limit", default="2", help="default: %(default)s")
    k.add_argument("--memory-limit", default="4Gi", help="default: %(default)s")
    k.add_argument("--min-replicas", type=int, default=1, help="default: %(default)s")
    k.add_argument("--max-replicas", type=int, default=2, help="default: %(default)s")
    k.add_argument("--artifacts-destination", default=None,
                   help="the MLflow server's --artifacts-destination, for proxied mlflow-artifacts:/ locations "
                        "(default: the stack's, s3://<bucket>/mlartifacts)")
    k.add_argument("--storage-uri", default=None, help="use this model location instead of resolving it")
    k.add_argument("--canary", type=int, default=None, metavar="PERCENT",
                   help="send this share of the traffic to this model and the rest to the running revision "
                        "(KServe's canaryTrafficPercent; apply over the deployed InferenceService of the same name)")

"""``fakeface stack up|status|down|env|dvc-remote`` and ``fakeface runs``.

The stack (SeaweedFS for S3, an MLflow server that serves artifacts from it, the DVC remote on
it) is described in :mod:`fakeface.stack`; the runs table in :mod:`fakeface.tracking.runs`. Tables and
export lines go to stdout, progress to the log (stderr). No secret value is ever logged:
``stack env`` prints the keys to stdout because that is what it is for.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fakeface.config import Params

log = logging.getLogger("fakeface")


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _config(args: argparse.Namespace):
    from fakeface import stack

    overrides = {
        "s3_port": getattr(args, "s3_port", None),
        "mlflow_port": getattr(args, "mlflow_port", None),
        "bucket": getattr(args, "bucket", None),
        "backend_store_uri": getattr(args, "backend_store_uri", None),
        "mlflow_workers": getattr(args, "workers", None),
    }
    weed_ports = getattr(args, "weed_ports", None)
    if weed_ports:
        try:
            master, volume, filer, admin = (int(p) for p in weed_ports.split(","))
        except ValueError:
            raise stack.StackError(
                f"--weed-ports {weed_ports!r}: give four ports, MASTER,VOLUME,FILER,ADMIN"
            ) from None
        overrides.update(master_port=master, volume_port=volume, filer_port=filer, admin_port=admin)
    return stack.load_config(args.dir, **overrides)


def _status_text(cfg, rows) -> str:
    from fakeface import stack
    from fakeface.tracking.redact import redact

    lines = [f"fakeface stack in {cfg.root}"]
    for row in rows:
        pid = str(row.pid) if row.pid else "-"
        state = "running" if row.running else "stopped"
        lines.append(f"  {row.name:<10} pid {pid:<8} {state:<8} {row.url:<24} {row.health}")
    lines.append(f"  tracking URI   {cfg.tracking_uri}  (artifacts proxied to {cfg.artifacts_destination})")
    lines.append(f"  backend store  {redact(cfg.backend_uri())}")
    lines.append(f"  S3 endpoint    {cfg.s3_endpoint}  bucket {cfg.bucket}")
    lines.append(f"  SeaweedFS      master {cfg.master_port}, volume {cfg.volume_port}, filer "
                 f"{cfg.filer_port}, admin {cfg.admin_port} (each + {stack.GRPC_OFFSET} for gRPC; "
                 f"all TLS, client certificate in {cfg.tls_dir}), data in {cfg.weed_dir}")
    lines.append(f"  DVC remote     {stack.DVC_REMOTE} = {cfg.dvc_url}")
    # Secrets the status only describes (never creates): a missing one shows as its error.
    secrets = (
        ("S3 keys", stack.resolve_credentials,
         lambda creds: f"key id {creds.masked_id} from {creds.source} (print them: fakeface stack env)"),
        ("MLflow login", stack.resolve_mlflow_login,
         lambda login: f"user {login.username!r} from {login.source} "
                       "(the UI asks for it; print it: fakeface stack env)"),
    )
    for label, resolve, describe in secrets:
        try:
            text = describe(resolve(cfg.root, create=False))
        except stack.StackError as error:
            text = str(error)
        lines.append(f"  {label:<15}{text}")
    lines.append(f"  logs           {cfg.log_dir}")
    lines.append('Use it: eval "$(fakeface stack env)"   # sets MLFLOW_TRACKING_URI, the MLflow login '
                 "and the S3 keys")
    return "\n".join(lines) + "\n"


def _up(args: argparse.Namespace, params: Params) -> None:
    from fakeface import stack

    cfg = _config(args)
    result = stack.up(cfg)
    if result.already_running:
        log.info("already running: %s", ", ".join(result.already_running))
    if not args.no_dvc:
        repo = Path(args.repo)
        if (repo / ".dvc").is_dir():
            creds = result.credentials if args.dvc_credentials == "local" else None
            info = stack.configure_dvc_remote(repo, cfg, creds)
            log.info(
                "DVC remote %s = %s (endpoint %s)%s; keys %s", info["remote"], info["url"],
                info["endpointurl"], ", the default" if info["default"] else
                f" (not the default: use dvc push -r {info['remote']})",
                "in .dvc/config.local (0600, not committed)" if creds else
                "from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
            )
        else:
            log.info("no .dvc/ in %s: DVC remote not configured (fakeface stack dvc-remote)", repo.absolute())
    log.info("stack up in %.1f s", result.seconds)
    _out(_status_text(cfg, stack.status(cfg)))


def _status(args: argparse.Namespace, params: Params) -> None:
    from fakeface import stack

    cfg = _config(args)
    rows = stack.status(cfg)
    _out(_status_text(cfg, rows))
    if not all(row.healthy for row in rows):
        raise SystemExit(3)


def _down(args: argparse.Namespace, params: Params) -> None:
    from fakeface import stack

    cfg = _config(args)
    outcome = stack.down(cfg)
    if not outcome:
        _out(f"nothing to stop: no service of the stack in {cfg.root} is recorded as running")
    for name, what in outcome.items():
        _out(f"{name}: {what}")


def _env(args: argparse.Namespace, params: Params) -> None:
    from fakeface import stack

    cfg = _config(args)
    creds = stack.resolve_credentials(cfg.root, create=False)
    login = stack.resolve_mlflow_login(cfg.root, create=False)
    _out("\n".join(stack.env_lines(cfg, creds, login)))


def _dvc_remote(args: argparse.Namespace, params: Params) -> None:
    from fakeface import stack

    cfg = _config(args)
    creds = stack.resolve_credentials(cfg.root, create=False) if args.credentials == "local" else None
    info = stack.configure_dvc_remote(Path(args.repo), cfg, creds, make_default=True if args.default else None)
    _out(
        f"DVC remote {info['remote']} = {info['url']} (endpointurl {info['endpointurl']})"
        f"{', default' if info['default'] else ''}; keys: {info['credentials']}"
    )


def _runs(args: argparse.Namespace, params: Params) -> None:
    from fakeface.tracking.runs import runs_table

    _out(runs_table(
        args.experiment or params.tracking.experiment,
        sort=args.sort,
        ascending=args.ascending,
        fmt=args.format,
        limit=args.limit,
        extra_params=args.param,
        extra_metrics=args.metric,
        include_side_runs=args.all,
    ))


def add_stack_commands(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Register ``stack`` (up, status, down, env, dvc-remote) and ``runs``."""
    from fakeface.tracking.runs import DEFAULT_SORT, FORMATS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=None,
                        help="the stack's data folder (env FAKEFACE_STACK_DIR; default .stack)")
    ports = argparse.ArgumentParser(add_help=False)
    ports.add_argument("--s3-port", type=int, default=None, help="S3 port (default 8333)")
    ports.add_argument("--mlflow-port", type=int, default=None, help="MLflow server port (default 5000)")
    ports.add_argument("--weed-ports", default=None, metavar="M,V,F,A",
                       help="SeaweedFS master,volume,filer,admin ports (default 9333,9340,8888,9346; "
                            "each + 10000 is its gRPC port)")
    ports.add_argument("--bucket", default=None, help="S3 bucket (default fakeface)")

    help_text = "a local tracking stack: SeaweedFS (S3) + MLflow server + DVC remote, on 127.0.0.1"
    p = sub.add_parser("stack", help=help_text, description=help_text)
    stack_sub = p.add_subparsers(dest="stack_command", required=True, metavar="ACTION")

    text = "start SeaweedFS and the MLflow server (if not running), create the bucket, set the DVC remote"
    q = stack_sub.add_parser("up", help=text, description=text, parents=[common, ports])
    q.add_argument("--backend-store-uri", default=None,
                   help="MLflow backend store, e.g. postgresql://user:pw@host/db "
                        "(env FAKEFACE_BACKEND_STORE_URI; default sqlite:///<dir>/mlflow.db)")
    q.add_argument("--workers", type=int, default=None, help="MLflow server workers (default 1)")
    q.add_argument("--repo", default=".", help="DVC project to add the remote to (default: .)")
    q.add_argument("--no-dvc", action="store_true", help="do not configure the DVC remote")
    q.add_argument("--dvc-credentials", choices=("local", "env"), default="local",
                   help="local: the keys in .dvc/config.local (0600, never committed); env: none "
                        "written, DVC reads AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (default local)")
    q.set_defaults(handler=_up, params_optional=True)

    text = "what runs where (pids, ports, URIs without secrets) and health; exit 3 when not healthy"
    q = stack_sub.add_parser("status", help=text, description=text, parents=[common])
    q.set_defaults(handler=_status, params_optional=True)

    text = "stop what `stack up` started (and nothing else); the data stays in the stack's folder"
    q = stack_sub.add_parser("down", help=text, description=text, parents=[common])
    q.set_defaults(handler=_down, params_optional=True)

    text = ('print export lines for a shell: eval "$(fakeface stack env)" (prints the MLflow '
            "password and the S3 secret key)")
    q = stack_sub.add_parser("env", help=text, description=text, parents=[common])
    q.set_defaults(handler=_env, params_optional=True)

    text = "add/update the DVC remote fakeface-s3 (s3://<bucket>/dvc on the stack's S3)"
    q = stack_sub.add_parser("dvc-remote", help=text, description=text, parents=[common, ports])
    q.add_argument("--repo", default=".", help="the DVC project (default: .)")
    q.add_argument("--credentials", choices=("local", "env"), default="local",
                   help="local: keys in .dvc/config.local (0600); env: from the environment")
    q.add_argument("--default", action="store_true", help="make it the default remote even if one is set")
    q.set_defaults(handler=_dvc_remote, params_optional=True)

    text = "a table of an experiment's runs: key params and test metrics, sorted by a metric"
    p = sub.add_parser("runs", help=text, description=text)
    p.add_argument("--experiment", default=None, help="default: tracking.experiment from params")
    p.add_argument("--sort", default=DEFAULT_SORT, metavar="METRIC",
                   help="metric to sort by, best (highest) first (default %(default)s)")
    p.add_argument("--ascending", action="store_true", help="lowest first (for losses)")
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--limit", type=int, default=None, help="show the first N rows only")
    p.add_argument("--param", action="append", metavar="KEY",
                   help="another param column, e.g. train.momentum or mom=train.momentum (repeatable)")
    p.add_argument("--metric", action="append", metavar="KEY",
                   help="another metric column, e.g. test_real_f1 (repeatable)")
    p.add_argument("--all", action="store_true", help="include side runs (eda)")
    p.set_defaults(handler=_runs)

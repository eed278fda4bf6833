"""``fakeface runs``: the experiment's runs side by side, their key params and test metrics.

One row per pipeline run (train opens it; evaluate and register add to it), sorted by a metric,
best first; runs that lack the metric (a crashed or unfinished run, one that never reached
evaluate) go to the bottom instead of failing the table. Side runs of stages that run before
training (``eda``, tagged ``fakeface.stage``) are left out unless ``include_side_runs``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fakeface import FakefaceError
from fakeface.tracking.redact import redact

#: (column label, MLflow param key): the knobs that tell pipeline runs apart.
DEFAULT_PARAMS: tuple[tuple[str, str], ...] = (
    ("backbone", "train.backbone"),
    ("optimizer", "train.optimizer"),
    ("head", "train.head_activation"),
    ("dropout", "train.dropout"),
    ("lr", "train.learning_rate"),
    ("ft_lr", "train.fine_tune_learning_rate"),
    ("schedule", "train.lr_schedule"),
    ("flip", "augment.flip.enabled"),
)
#: Test metrics (logged by evaluate) and the train stage's best validation AUC.
DEFAULT_METRICS: tuple[str, ...] = ("test_auc", "test_accuracy", "test_fake_f1", "best_val_auc")
DEFAULT_SORT = "test_auc"
FORMATS = ("text", "markdown")
MISSING = "-"


@dataclass
class RunRow:
    run_id: str
    run_name: str
    status: str
    start_time: int | None  # ms since the epoch
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def metric(self, key: str) -> float | None:
        value = self.metrics.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return value


def row_from_run(run: Any) -> RunRow:
    """An MLflow ``Run`` (from ``MlflowClient.search_runs``) as a row."""
    return RunRow(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        status=run.info.status,
        start_time=run.info.start_time,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
    )


def fetch_runs(
    experiment: str,
    client: Any | None = None,
    include_side_runs: bool = False,
    max_runs: int = 5000,
) -> list[RunRow]:
    """Every run of ``experiment`` at the current tracking URI (newest first), as rows."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY))
        raise FakefaceError(
            f"no experiment named {experiment!r} at {_where(client)}"
            + (f"; experiments there: {', '.join(names)}" if names else "; it has no experiments yet")
        )
    rows: list[RunRow] = []
    token = None
    while len(rows) < max_runs:
        page = client.search_runs(
            [exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
            max_results=min(1000, max_runs - len(rows)), order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        rows.extend(row_from_run(run) for run in page)
        token = page.token
        if not token:
            break
    if not include_side_runs:
        rows = [row for row in rows if "fakeface.stage" not in row.tags]
    return rows


def _where(client: Any) -> str:
    uri = getattr(getattr(client, "_tracking_client", None), "tracking_uri", None)
    return redact(str(uri)) if uri else "the tracking store"


def sort_rows(rows: Sequence[RunRow], metric: str, ascending: bool = False) -> list[RunRow]:
    """Best first by ``metric`` (highest, or lowest with ``ascending``); rows without it last.

    Ties and the rows without the metric keep their order (newest first from :func:`fetch_runs`).
    """
    have = [row for row in rows if row.metric(metric) is not None]
    lack = [row for row in rows if row.metric(metric) is None]
    have.sort(key=lambda row: row.metric(metric), reverse=not ascending)  # stable for ties
    return have + lack


def _format_started(start_time: int | None) -> str:
    if not start_time:
        return MISSING
    return datetime.fromtimestamp(start_time / 1000).strftime("%Y-%m-%d %H:%M")


def _format_param(value: str | None) -> str:
    return MISSING if value in (None, "", "null", "None") else value


def _format_metric(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4f}"


def table_cells(
    rows: Sequence[RunRow],
    params: Sequence[tuple[str, str]] = DEFAULT_PARAMS,
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, cell strings and which columns are numeric (right-aligned)."""
    header = ["run", "run_id", "started", *(label for label, _ in params), *metrics]
    numeric = [False, False, False, *(False for _ in params), *(True for _ in metrics)]
    body = []
    for row in rows:
        body.append([
            row.run_name or MISSING,
            row.run_id[:8],
            _format_started(row.start_time),
            *(_format_param(row.params.get(key)) for _, key in params),
            *(_format_metric(row.metric(name)) for name in metrics),
        ])
    return header, body, numeric


def render(
    rows: Sequence[RunRow],
    params: Sequence[tuple[str, str]] = DEFAULT_PARAMS,
    metrics: Sequence[str] = DEFAULT_METRICS,
    fmt: str = "text",
) -> str:
    """The table as aligned plain text or as a GitHub-flavoured markdown table."""
    if fmt not in FORMATS:
        raise FakefaceError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    header, body, numeric = table_cells(rows, params, metrics)
    if fmt == "markdown":
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
        return "\n".join([line(header), rule, *(line(r) for r in body)]) + "\n"
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]

    def text_line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([text_line(header), rule, *(text_line(r) for r in body)]) + "\n"


def parse_param_columns(keys: Sequence[str] | None) -> list[tuple[str, str]]:
    """``--param`` keys (``train.momentum`` or ``label=train.momentum``) after the defaults."""
    columns = list(DEFAULT_PARAMS)
    for key in keys or ():
        label, _, name = key.partition("=") if "=" in key else (key.rsplit(".", 1)[-1], "", key)
        if name not in {k for _, k in columns}:
            columns.append((label, name))
    return columns


def runs_table(
    experiment: str,
    sort: str = DEFAULT_SORT,
    ascending: bool = False,
    fmt: str = "text",
    limit: int | None = None,
    extra_params: Sequence[str] | None = None,
    extra_metrics: Sequence[str] | None = None,
    include_side_runs: bool = False,
) -> str:
    """The whole ``fakeface runs`` command: connect, fetch, sort, render."""
    import mlflow

    from fakeface import tracking
    from fakeface.tracking.health import check_tracking_server

    tracking.apply_http_defaults()
    uri = tracking.tracking_uri()
    check_tracking_server(uri)  # also: a server that wants a login the environment does not give
    mlflow.set_tracking_uri(uri)
    with tracking.server_errors(f"listing the runs of experiment {experiment!r}"):
        rows = fetch_runs(experiment, include_side_runs=include_side_runs)
    rows = sort_rows(rows, sort, ascending)
    if limit:
        rows = rows[:limit]
    metrics = list(DEFAULT_METRICS)
    for name in [sort, *(extra_metrics or ())]:
        if name not in metrics:
            metrics.append(name)
    table = render(rows, parse_param_columns(extra_params), metrics, fmt)
    with_metric = sum(row.metric(sort) is not None for row in rows)
    order = "ascending" if ascending else "descending"
    footer = (
        f"{len(rows)} run(s) of experiment {experiment!r} at {redact(uri)}, by {sort} "
        f"({order}); {len(rows) - with_metric} without {sort} at the bottom"
    )
    if fmt == "markdown":
        return table + f"\n_{footer}_\n"
    return table + footer + "\n"

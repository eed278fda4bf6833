"""What each batch-scoring component does in its pod (:mod:`fakeface.components.batch` calls
these with its validated params and KFP artifacts); the scoring itself is
:mod:`fakeface.inference.batch`.

The files and the shares are decided once, by the plan step, and reach the scoring tasks in the
``plan`` artifact (kfp.local replaces a task-output *parameter* inside a ``ParallelFor`` with the
loop item; artifacts pass through, as in the ablation pipeline).
"""

from __future__ import annotations

import json
from pathlib import Path



def batch_plan_step(params, source, workers, plan) -> int:
    from fakeface.inference.batch import plan as make_plan

    planned = make_plan(source, workers)
    Path(plan.path).write_text(json.dumps(planned) + "\n")
    plan.metadata.update({"source": source, "files": planned["n"], "workers": workers})
    return planned["n"]


def batch_score_step(params, model_uri, worker_index, plan, scores) -> None:
    from fakeface.inference.batch import score_share

    share = json.loads(Path(plan.path).read_text())["shares"][worker_index]
    frame = score_share(share, model_uri, Path(scores.path), params.evaluate.batch_size, params.data.max_pixels)
    scores.metadata.update({"worker_index": worker_index, "files": len(frame)})


def batch_merge_step(params, model_uri, plan, scores, results, summary, report) -> None:
    from fakeface.inference.batch import merge, write_outputs

    planned = json.loads(Path(plan.path).read_text())
    table, numbers = merge([Path(item.path) for item in scores], planned)
    out = write_outputs(table, numbers, Path(results.path), params.tracking.experiment, planned["source"])
    for key in ("files", "scored", "failed", "labelled_fake"):
        summary.log_metric(key, numbers[key])
    results.metadata.update({"model": model_uri, "files": numbers["files"], "scored": numbers["scored"]})
    errors = ", ".join(f"{kind} {n}" for kind, n in numbers["errors"].items()) or "none"
    Path(report.path).write_text(
        f"# Batch scoring\n\n{numbers['files']} files from `{planned['source']}` scored with `{model_uri}` "
        f"(threshold {numbers['threshold']}): {numbers['labelled_fake']} fake, {numbers['labelled_real']} real, "
        f"{numbers['failed']} without a score ({errors}).\n\nResults: `{out / 'results.csv'}`.\n"
    )

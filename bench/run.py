"""Run the benchmark suite: ``python -m bench`` (or ``python bench/run.py``, ``make bench``).

Writes bench/results/latest.json (raw numbers, rows with verdicts, machine info) and
bench/results/latest.md (the table). ``--only input,training`` runs some sections;
``--workdir`` keeps the generated data between runs (default: a temporary folder, removed).

Opt-in sections, not run by default: ``--only containers`` builds the project
image with podman or docker (a cold build downloads ~700 MB of wheels) and runs the training
pipeline under kfp.local's DockerRunner against SubprocessRunner; 10-20 min on 2 cores. Give it
its own ``--out`` (the last run: bench/results/containers.{json,md}) so latest.* keeps the rest.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import markdown, rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ORDER = ("input", "training", "inference", "scale", "pipeline")
#: Run only when named in --only (they need more than this Python: a container engine).
OPTIONAL = ("containers",)
#: Sections that use the synthetic sets made by prepare().
NEEDS_DATA = ("input", "inference", "scale")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_results(out_dir: Path, stem: str, results: dict, render: Callable[[dict], str]) -> None:
    """``<stem>.json`` (the numbers) and ``<stem>.md`` (``render``'s table, printed too) in
    ``out_dir``: every bench entry point leaves its results the same way, and the JSON is written
    before the table is rendered, so a rendering bug never loses a run's numbers."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = render(results)
    (out_dir / f"{stem}.md").write_text(table)
    print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ORDER),
                        help=f"comma-separated sections of {ORDER} (default: all), or opt-in {OPTIONAL}")
    parser.add_argument("--workdir", help="keep generated data here (default: a temporary folder)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for latest.json and latest.md")
    parser.add_argument("--render", action="store_true", help="only re-render latest.md from latest.json")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads((Path(args.out) / "latest.json").read_text())
        results["rows"] = rows(results["raw"])
        write_results(Path(args.out), "latest", results, markdown)
        return 0
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(ORDER) - set(OPTIONAL)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {ORDER + OPTIONAL}")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="fakeface-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_DISABLE_TELEMETRY": "true"}
    started = time.perf_counter()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "load_before": _load(),
        "note": "a shared machine: other jobs were running, so rates are lower and noisier than on an idle one",
    }
    raw: dict = {}
    timings: dict = {}
    try:
        if set(chosen) & set(NEEDS_DATA):
            t = time.perf_counter()
            code = "import json,sys; from pathlib import Path; from bench.sections import prepare; print(json.dumps(prepare(Path(sys.argv[1]))))"
            subprocess.run([sys.executable, "-c", code, str(work)], cwd=ROOT, env=env, check=True)
            timings["prepare"] = time.perf_counter() - t
        for name in [s for s in ORDER + OPTIONAL if s in chosen]:
            out = work / f"{name}.json"
            t = time.perf_counter()
            print(f"bench: {name} ...", flush=True)
            done = subprocess.run([sys.executable, "-m", "bench.sections", name, str(work), str(out)], cwd=ROOT, env=env)
            timings[name] = time.perf_counter() - t
            if done.returncode == 0:
                raw[name] = json.loads(out.read_text())
            else:
                raw[name] = {"error": f"section exited {done.returncode} (see the log above)"}
            print(f"bench: {name} done in {timings[name]:.0f} s", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    import tensorflow as tf  # only for the header line (the sections imported it in their own processes)

    meta.update(
        load_after=_load(),
        total_s=time.perf_counter() - started,
        section_s=timings,
        tensorflow=tf.__version__,
        gpu="present" if tf.config.list_physical_devices("GPU") else "none",
    )
    results = {"meta": meta, "raw": raw, "rows": rows(raw)}
    write_results(Path(args.out), "latest", results, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

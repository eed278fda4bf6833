"""Targets, verdicts and the markdown table: pure functions of the raw numbers (no TensorFlow).

``rows(raw)`` turns the raw per-section measurements (see :mod:`bench.sections`) into table rows,
each with the target and a verdict; ``markdown(results)`` renders them. Kept apart from the
measuring code so that tests/test_bench.py can check the table on fake numbers.
"""

from __future__ import annotations

from typing import Any

COLUMNS = ("Benchmark", "Measured", "Target", "Verdict", "Notes")
PASS, MISS, INFO, SKIPPED = "PASS", "MISS", "-", "skipped"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def _verdict(ok: bool | None) -> str:
    return INFO if ok is None else (PASS if ok else MISS)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    else:
        text = f"{value:,}"
    return f"{text} {unit}".strip()


def _row(name: str, value: Any, unit: str = "", target: str = "", ok: bool | None = None, note: str = "") -> dict:
    return {
        "benchmark": name,
        "value": value,
        "unit": unit,
        "measured": _fmt(value, unit),
        "target": target or "-",
        "verdict": _verdict(ok) if not (isinstance(value, str) and value.startswith("skipped")) else SKIPPED,
        "notes": note,
    }


def rows(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows with verdicts from the raw section results (missing sections are left out)."""
    out: list[dict[str, Any]] = []

    if (inp := raw.get("input")) and "error" not in inp:
        spread = inp.get("all_rates", {})

        def rng(key: str) -> str:
            r = spread.get(key)
            return f"median of {len(r)} epochs after warm-up, range {min(r):,.0f}-{max(r):,.0f}" if r else ""

        cfg = f"{inp['images']} JPEGs, {inp['size']} px, batch {inp['batch']}"

        def paired(key: str, base: str) -> str:
            """key / base per round (the two were measured back to back in each round)."""
            a, b = spread.get(key), spread.get(base)
            if not a or not b or len(a) != len(b):
                return ""
            ratios = sorted(x / y for x, y in zip(a, b))
            mid = ratios[len(ratios) // 2] if len(ratios) % 2 else sum(ratios[len(ratios) // 2 - 1 : len(ratios) // 2 + 1]) / 2
            return (f"ratio of medians; per-round paired ratios: median {mid:.2f}, "
                    f"range {ratios[0]:.2f}-{ratios[-1]:.2f}")

        limit = inp["decode_limit"]
        out.append(_row("input: decode limit (tf.data, parallel read+decode_jpeg)", limit, "img/s",
                        note="file list -> read_file -> decode_jpeg -> float32, AUTOTUNE map, batch, prefetch, "
                        f"no augmentation; {rng('decode_limit')}"))
        variants = (
            ("shards", "make_dataset, default (flip), no cache", ">= 0.90", 0.9),
            ("shards_full", f"make_dataset, all augmentations ({inp.get('full_set', 'all')}), no cache", "", None),
            ("cache_memory", "make_dataset, flip, cache memory, epochs 2+", ">= 2x", 2.0),
            ("cache_disk", "make_dataset, flip, cache disk, epochs 2+", "", None),
            ("idfd", "image_dataset_from_directory + RandomFlip", "", None),
        )
        for key, label, target, minimum in variants:
            if inp.get(key) is None:
                continue
            out.append(_row(f"input: {label}", inp[key], "img/s", note=f"{cfg}; {rng(key)}"))
            r = _ratio(inp[key], limit)
            out.append(_row(f"input: {key} / decode limit", r, "x", target,
                            None if (r is None or minimum is None) else r >= minimum, paired(key, "decode_limit")))
        if inp.get("decode_limit_pil") is not None:
            out.append(_row("input: decode (ThreadPool + PIL), for reference", inp["decode_limit_pil"], "img/s",
                            note=f"{inp.get('threads', 2)} threads, PIL decode -> float32; {rng('decode_limit_pil')}"))
        r = _ratio(inp["shards"], inp.get("idfd"))
        out.append(_row("input: shards / image_dataset_from_directory", r, "x", ">= 2x", None if r is None else r >= 2,
                        paired("shards", "idfd")))
        step = inp.get("train_step") or {}
        for cache in ("none", "memory"):
            if cache in step:
                out.append(_row(f"train step CPU fed by make_dataset: smallcnn 64 px, cache {cache}", step[cache],
                                "img/s", note="model.fit over the shards, epochs 2-3, batch 64"))
    if (tr := raw.get("training")) and "error" not in tr:
        for key, label in (("smallcnn_64", "smallcnn 64 px"), ("mobilenetv2_128", "MobileNetV2 128 px (weights none)")):
            if key in tr:
                out.append(_row(f"train step CPU: {label}", tr[key], "img/s",
                                note=f"batch {tr.get('batch')}, {tr.get('steps')} steps after {tr.get('warmup')} warm-up"))
        out.append(_row("train step GPU: Xception 299 px (+/- mixed precision, XLA)", tr.get("gpu", "skipped: no GPU"), ""))
    if (inf := raw.get("inference")) and "error" not in inf:
        out.append(_row("predict: predict_files (batch path)", inf["batch"], "img/s",
                        note=f"{inf['images']} images, {inf['size']} px smallcnn, batch {inf['batch_size']}"))
        per_1000 = inf["images"] / inf["per_image"] if inf["per_image"] else None
        out.append(_row("predict: model.predict per image", inf["per_image"], "img/s",
                        note=f"measured on {inf['per_image_n']} images, same load_input; extrapolated "
                        f"{per_1000:.0f} s for {inf['images']} (batch path: {inf['images'] / inf['batch']:.1f} s)"))
        r = _ratio(inf["batch"], inf["per_image"])
        out.append(_row("predict: batch / per-image", r, "x", ">= 10x", None if r is None else r >= 10))
    if (sc := raw.get("scale")) and "error" not in sc:
        small, big = sc["small"], sc["large"]
        for run in (small, big):
            split = f"ingest {run['ingest_s']:.1f} s + augment {run['augment_s']:.1f} s; " if "ingest_s" in run else ""
            out.append(_row(f"scale: ingest+augment {run['n']:,} images (64 px)", run["wall_s"], "s",
                            note=f"{split}peak RSS {run['rss_mb']:.0f} MB; own fresh subprocess; images "
                            "pre-generated (not timed), ingested as a folder"))
        r = _ratio(big["wall_s"], small["wall_s"])
        n = big["n"] / small["n"]
        fixed = ""
        if r is not None and r < 0.7 * n:
            marginal = (big["wall_s"] - small["wall_s"]) / (big["n"] - small["n"]) * 1000
            fixed = (f"well below {n:.0f}: fixed start-up cost (TensorFlow import, preview figure) dominates at "
                     f"{small['n']:,}; marginal cost {marginal:.2f} s per 1,000 images")
        out.append(_row(f"scale: wall-time ratio ({n:.0f}x images)", r, "x", "~10, <= 12",
                        None if r is None else r <= 12, fixed))
        r = _ratio(big["rss_mb"], small["rss_mb"])
        out.append(_row("scale: peak RSS ratio", r, "x", "~1, <= 1.3", None if r is None else r <= 1.3))
    if (pl := raw.get("pipeline")) and "error" not in pl:
        noop = pl.get("noop_repro_s")
        out.append(_row("pipeline: dvc repro, nothing changed", noop, "s", "< 5 s", None if noop is None else noop < 5))
        out.append(_row("pipeline: dvc repro (tiny params, all 6 stages)", pl.get("dvc_repro_s"), "s",
                        note=pl.get("params_note", "")))
        out.append(_row("pipeline: kfp.local run_local (same params)", pl.get("kfp_local_s"), "s"))
        r = _ratio(pl.get("kfp_local_s"), pl.get("dvc_repro_s"))
        out.append(_row("pipeline: kfp.local / dvc repro", r, "x", "<= 1.3", None if r is None else r <= 1.3))
    if (ct := raw.get("containers")) and "error" not in ct:
        if "skipped" in ct:
            out.append(_row("containers: image and DockerRunner", f"skipped: {ct['skipped']}"))
        else:
            size = ct.get("image_bytes")
            out.append(_row("containers: image size", None if size is None else size / 1e9, "GB",
                            note="podman image inspect .Size; TensorFlow alone is ~1.9 GB of it"))
            out.append(_row("containers: base image from Debian packages (mmdebstrap)", ct.get("base_s"), "s"))
            out.append(_row("containers: cold image build (no layer cache, base present)", ct.get("cold_build_s"), "s",
                            note="dependencies from the package index (docker/requirements.lock)"))
            code = ct.get("code_rebuild_s")
            out.append(_row("containers: rebuild after a code-only change", code, "s", "< 60 s",
                            None if code is None else code < 60,
                            note="only the project layer (pip install --no-deps .) is rebuilt"))
            out.append(_row("containers: rebuild, nothing changed", ct.get("nochange_rebuild_s"), "s"))
            note = ct.get("params_note", "")

            def best_of(key: str) -> str:
                runs = ct.get(key) or []
                return f"best of {len(runs)}: " + ", ".join(f"{x:.0f}" for x in runs) + " s" if runs else ""

            out.append(_row("containers: pipeline, SubprocessRunner", ct.get("subprocess_s"), "s",
                            note=f"{best_of('subprocess_all')}; {note}".strip("; ")))
            out.append(_row("containers: pipeline, DockerRunner (every step in the image)", ct.get("docker_s"), "s",
                            note=f"{best_of('docker_all')}; same params, same MLflow server (the stack)".strip("; ")))
            r = _ratio(ct.get("docker_s"), ct.get("subprocess_s"))
            out.append(_row("containers: DockerRunner / SubprocessRunner", r, "x", "<= 1.5",
                            None if r is None else r <= 1.5))
            out.append(_row("containers: DockerRunner, second run with train.dropout changed",
                            ct.get("docker_cached_s"), "s", note="ingest, eda, augment, preview from the cache"))
            r = _ratio(ct.get("docker_cached_s"), ct.get("docker_s"))
            out.append(_row("containers: cached second run / first run", r, "x", "< 1", None if r is None else r < 1))
    for name, section in raw.items():
        if isinstance(section, dict) and "error" in section:
            out.append(_row(f"{name}: FAILED", section["error"][:120], "", ok=False))
    return out


def markdown(results: dict[str, Any]) -> str:
    """The table (and a header line on the machine) as GitHub markdown."""
    meta = results.get("meta", {})
    lines = []
    if meta:
        lines.append(
            f"Run {meta.get('date', '?')} on {meta.get('cpus', '?')} CPU cores "
            f"(load average {meta.get('load_before', '?')} before, {meta.get('load_after', '?')} after; "
            f"{meta.get('note', '')}), TensorFlow {meta.get('tensorflow', '?')}, GPU: {meta.get('gpu', '?')}. "
            f"Total {meta.get('total_s', 0):.0f} s."
        )
        lines.append("")
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for row in results.get("rows") or rows(results.get("raw", {})):
        cells = [row["benchmark"], row["measured"], row["target"], row["verdict"], row["notes"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"

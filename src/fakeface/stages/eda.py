"""The eda stage: what the data looks like before any model sees it.

Numbers and pictures that catch data problems early and hint at what a detector will learn:

* counts per class and split (imbalance, an empty split);
* image sizes, formats and sources per class: if fakes are all PNG and reals all JPEG, or the two
  classes have different sizes, a model can score well by reading the container, not the face;
* per-channel mean / std per class over a deterministic sample (colour casts between the sources);
* a sample grid per class, to look at;
* the mean log-magnitude Fourier spectrum per class, and their difference. GAN generators upsample,
  and upsampling leaves periodic traces that show up as peaks at high spatial frequencies; the
  ``spectral_peak_score`` turns that into one comparable number per class.

Pixel statistics and spectra are computed on the *train* split (falling back to all splits for a
class that has no train images), so nothing about the test split informs modelling choices.
Images are read one at a time; only running sums are kept, so memory does not grow with the sample.

Plots use matplotlib's object API on the Agg canvas (no pyplot, no global backend switch), so the
stage runs headless in a pod and does not disturb a caller's own matplotlib state.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fakeface import CLASS_NAMES, SPLITS
from fakeface.config import EdaConfig, Params
from fakeface.logs import progress
from fakeface.data.manifest import read_manifest
from fakeface.stages.paths import EdaPaths

log = logging.getLogger(__name__)

#: Radius (as a fraction of the Nyquist frequency, axis units) from which a frequency counts as
#: "high" for the spectral scores. Natural images have little energy out there; upsampling
#: artefacts sit at N/2 (checkerboard), N/4 ... so the band from half-Nyquist outwards holds them.
HIGH_FREQUENCY_FROM = 0.5
#: The outermost ring used for ``high_frequency_level``.
OUTER_RING_FROM = 0.75
#: Side of the neighbourhood a spectral peak is compared with (see :func:`spectral_scores`).
PEAK_NEIGHBOURHOOD = 5
GRID_THUMB = 128


# --------------------------------------------------------------------------- manifest numbers


def _counts(manifest: pd.DataFrame) -> dict[str, Any]:
    def n(split: str, label: str) -> int:
        return int(((manifest["split"] == split) & (manifest["label"] == label)).sum())

    per_split = {
        split: {**{name: n(split, name) for name in CLASS_NAMES}, "total": sum(n(split, c) for c in CLASS_NAMES)}
        for split in SPLITS
    }
    per_class = {name: int((manifest["label"] == name).sum()) for name in CLASS_NAMES}
    return {"per_split": per_split, "per_class": per_class, "total": int(len(manifest))}


def _distribution(manifest: pd.DataFrame, values: pd.Series) -> dict[str, dict[str, int]]:
    """Value counts per class and overall, most common first (ties by value, for stable JSON)."""

    def counts(series: pd.Series) -> dict[str, int]:
        table = series.value_counts()
        items = sorted(table.items(), key=lambda kv: (-kv[1], str(kv[0])))
        return {str(k): int(v) for k, v in items}

    out = {name: counts(values[manifest["label"] == name]) for name in CLASS_NAMES}
    out["all"] = counts(values)
    return out


def _size_stats(manifest: pd.DataFrame) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for name in CLASS_NAMES:
        rows = manifest[manifest["label"] == name]
        if rows.empty:
            stats[name] = None
            continue
        stats[name] = {
            axis: {
                "min": int(rows[axis].min()),
                "max": int(rows[axis].max()),
                "mean": float(rows[axis].mean()),
            }
            for axis in ("width", "height")
        }
    return stats


# --------------------------------------------------------------------------- sampling


def _ordered_sample(manifest: pd.DataFrame, label: str, n: int, seed: int) -> pd.DataFrame:
    """Up to ``n`` rows of ``label``, deterministic for ``seed`` whatever the manifest row order."""
    rows = manifest[(manifest["label"] == label) & (manifest["split"] == "train")]
    if rows.empty:
        rows = manifest[manifest["label"] == label]
        if not rows.empty:
            log.warning("no train images of class %s; sampling it from all splits", label)
    rows = rows.sort_values("path", kind="stable").reset_index(drop=True)
    rng = np.random.default_rng([seed, list(CLASS_NAMES).index(label)])
    order = rng.permutation(len(rows))[: min(n, len(rows))]
    return rows.iloc[order].reset_index(drop=True)


def _load_rgb(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


# --------------------------------------------------------------------------- spectra


def _gray_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Grey ``size x size``: a centre crop at native resolution, upscaled only if too small.

    Cropping rather than downscaling matters: resampling is a low-pass filter, and the traces of a
    generator's upsampling live at the highest frequencies it would remove.
    """
    gray = rgb @ np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as PIL's "L"
    h, w = gray.shape
    if min(h, w) < size:
        scale = size / min(h, w)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        gray = np.asarray(Image.fromarray(gray.astype(np.float32)).resize((new_w, new_h), Image.BICUBIC))
        h, w = gray.shape
    top, left = (h - size) // 2, (w - size) // 2
    return gray[top : top + size, left : left + size].astype(np.float64)


def log_spectrum(gray: np.ndarray) -> np.ndarray:
    """Centred log-magnitude spectrum ``log|fftshift(fft2(x - mean))| + 1e-8``.

    Subtracting the mean removes the DC spike that would otherwise dominate the colour scale.
    """
    return np.log(np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) + 1e-8)


def _radius(size: int) -> np.ndarray:
    """Distance of each centred frequency bin from DC, in units of the Nyquist frequency."""
    freq = np.fft.fftshift(np.fft.fftfreq(size)) * 2.0  # -1 .. <1, Nyquist = 1
    fy, fx = np.meshgrid(freq, freq, indexing="ij")
    return np.sqrt(fx**2 + fy**2)


def radial_profile(spectrum: np.ndarray, bins: int | None = None) -> np.ndarray:
    """Azimuthal mean of a centred spectrum in rings from DC (0) to Nyquist (1): the 1-D view.

    The DC bin itself is left out (it is ~log 1e-8 once the mean is removed).
    """
    size = spectrum.shape[0]
    bins = bins or size // 2
    radius = _radius(size)
    inside = (radius > 0) & (radius <= 1.0)
    index = np.minimum((radius[inside] * bins).astype(int), bins - 1)
    sums = np.bincount(index, weights=spectrum[inside], minlength=bins)
    counts = np.bincount(index, minlength=bins)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)  # NaN: a ring with no bins


def _local_median(spectrum: np.ndarray, width: int = PEAK_NEIGHBOURHOOD) -> np.ndarray:
    """Median of each bin's ``width x width`` neighbourhood, wrapping round (a DFT is periodic)."""
    half = width // 2
    shifted = [
        np.roll(spectrum, (dy, dx), axis=(0, 1))
        for dy in range(-half, half + 1)
        for dx in range(-half, half + 1)
    ]
    return np.median(np.stack(shifted), axis=0)


def spectral_scores(spectrum: np.ndarray) -> dict[str, float]:
    """Scalars that summarise a class's mean log spectrum, comparable between classes and runs.

    ``spectral_peak_score``: the largest *local prominence* at or beyond half-Nyquist: a bin's
    log-magnitude minus the median of its 5x5 neighbourhood, maximised over the band. Log units, so
    it is the log of a magnitude ratio. Upsampling artefacts are isolated spikes (a checkerboard is
    a single bin at the corner), so they stand out from their neighbours; a natural image's spectrum
    is smooth, and so is the bright cross on the axes that every un-windowed FFT of a non-periodic
    image shows (the image edges). A plain "band maximum minus band median" would be dominated by
    that cross, equally for both classes, and hide the artefacts.

    ``high_frequency_level``: mean of the outer ring (beyond 0.75 Nyquist) minus the median of all
    non-DC bins: how much high-frequency energy there is overall, relative to the typical bin.
    """
    radius = _radius(spectrum.shape[0])
    prominence = spectrum - _local_median(spectrum)
    non_dc = spectrum[radius > 0]
    return {
        "spectral_peak_score": float(prominence[radius >= HIGH_FREQUENCY_FROM].max()),
        "high_frequency_level": float(spectrum[radius >= OUTER_RING_FROM].mean() - np.median(non_dc)),
    }


# --------------------------------------------------------------------------- plots


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save_grid(rows: pd.DataFrame, label: str, path: Path) -> None:
    n = len(rows)
    cols = max(1, math.ceil(math.sqrt(n)))
    lines = max(1, math.ceil(n / cols))
    figure = _figure(cols * 1.6, lines * 1.6 + 0.4)
    figure.suptitle(f"{label}: {n} sample image(s)")
    for k in range(cols * lines):
        axis = figure.add_subplot(lines, cols, k + 1)
        axis.axis("off")
        if k < n:
            row = rows.iloc[k]
            with Image.open(row["path"]) as image:
                thumb = image.convert("RGB")
                thumb.thumbnail((GRID_THUMB, GRID_THUMB))
                axis.imshow(np.asarray(thumb))
            axis.set_title(f"{row['width']}x{row['height']} {row['format']}", fontsize=6)
    figure.tight_layout()
    figure.savefig(path)


def _save_spectrum_plot(spectra: dict[str, np.ndarray | None], path: Path) -> None:
    figure = _figure(16, 4)
    panels = [(name, spectra.get(name)) for name in CLASS_NAMES]
    panels.append(("fake - real", spectra.get("difference")))
    for k, (title, array) in enumerate(panels):
        axis = figure.add_subplot(1, 4, k + 1)
        axis.set_title(f"{title}" + (" (mean log |F|)" if title in CLASS_NAMES else ""))
        axis.set_xticks([])
        axis.set_yticks([])
        if array is None:
            axis.text(0.5, 0.5, "no images", ha="center", va="center", transform=axis.transAxes)
            continue
        if title == "fake - real":
            limit = float(np.abs(array).max()) or 1.0
            shown = axis.imshow(array, cmap="coolwarm", vmin=-limit, vmax=limit)
        else:
            # Colour limits from the non-DC bins: the DC bin (~log 1e-8 after removing the mean)
            # would otherwise stretch the scale and flatten everything else.
            rest = array[_radius(array.shape[0]) > 0]
            shown = axis.imshow(array, cmap="viridis", vmin=float(rest.min()), vmax=float(rest.max()))
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    axis = figure.add_subplot(1, 4, 4)
    for name in CLASS_NAMES:
        if spectra.get(name) is not None:
            profile = radial_profile(spectra[name])
            axis.plot(np.linspace(0, 1, len(profile), endpoint=False), profile, label=name)
    axis.set_xlabel("frequency / Nyquist")
    axis.set_ylabel("mean log |F|")
    axis.set_title("azimuthal average")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)


# --------------------------------------------------------------------------- the stage


def _class_pass(
    rows: pd.DataFrame, label: str, spectrum_size: int
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One streaming pass over a class sample: running channel sums and the summed log spectrum.

    Channel statistics are per pixel (a larger image weighs more), in 0..255.
    """
    total = np.zeros(3)
    total_sq = np.zeros(3)
    pixels = 0
    spectrum_sum = np.zeros((spectrum_size, spectrum_size))
    for path in progress(rows["path"], desc=f"eda {label}", total=len(rows)):
        rgb = _load_rgb(path)
        flat = rgb.reshape(-1, 3)
        total += flat.sum(axis=0)
        total_sq += (flat**2).sum(axis=0)
        pixels += flat.shape[0]
        spectrum_sum += log_spectrum(_gray_square(rgb, spectrum_size))
    if not len(rows):
        return {"n_images": 0, "mean": None, "std": None}, None
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean**2, 0.0))
    stats = {
        "n_images": int(len(rows)),
        "mean": {c: float(v) for c, v in zip("RGB", mean, strict=True)},
        "std": {c: float(v) for c, v in zip("RGB", std, strict=True)},
    }
    return stats, spectrum_sum / len(rows)


def run(params: Params, paths: EdaPaths, *, track: bool = True) -> dict:
    """Run the eda stage: plots, ``spectrum.npz`` and ``eda.json`` in ``paths.out_dir``.

    With ``track`` the numbers and files go to an MLflow run of their own (tagged
    ``fakeface.stage=eda``: eda runs before train opens the pipeline's run); the returned dict is
    ``eda.json``'s content plus that run's id as ``mlflow_run_id``.
    """
    report = describe(params.eda, params.seed, Path(paths.manifest), Path(paths.out_dir))
    if track:
        from fakeface import tracking

        report["mlflow_run_id"] = tracking.log_side_run(
            "eda", params.tracking.experiment, Path(paths.out_dir), report
        )
    return report


def describe(cfg: EdaConfig, seed: int, manifest_path: Path, out_dir: Path) -> dict:
    """Write the EDA files to ``out_dir``; returns the dict written to ``eda.json``."""
    manifest = read_manifest(manifest_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    sizes = manifest["width"].astype(str) + "x" + manifest["height"].astype(str)
    report: dict[str, Any] = {
        "manifest": str(manifest_path),
        "seed": int(seed),
        "config": cfg.model_dump(),
        "counts": _counts(manifest),
        "sizes": _distribution(manifest, sizes),
        "size_stats": _size_stats(manifest),
        "formats": _distribution(manifest, manifest["format"].astype(str)),
        "sources": _distribution(manifest, manifest["source"].astype(str)),
    }

    pixel_stats: dict[str, Any] = {}
    spectra: dict[str, np.ndarray | None] = {}
    files: dict[str, str] = {}
    for label in CLASS_NAMES:
        sample = _ordered_sample(manifest, label, max(cfg.sample_per_class, cfg.grid_images), seed)
        stats, spectrum = _class_pass(sample.iloc[: cfg.sample_per_class], label, cfg.spectrum_size)
        pixel_stats[label] = stats
        spectra[label] = spectrum
        grid_path = out_dir / f"grid_{label}.png"
        _save_grid(sample.iloc[: cfg.grid_images], label, grid_path)
        files[f"grid_{label}"] = grid_path.name

    real, fake = spectra["real"], spectra["fake"]
    spectra["difference"] = fake - real if real is not None and fake is not None else None
    _save_spectrum_plot(spectra, out_dir / "spectrum.png")
    arrays = {k: v.astype(np.float32) for k, v in spectra.items() if v is not None}
    for label in CLASS_NAMES:
        if spectra[label] is not None:
            arrays[f"radial_{label}"] = radial_profile(spectra[label]).astype(np.float32)
    np.savez(out_dir / "spectrum.npz", spectrum_size=np.int64(cfg.spectrum_size), **arrays)
    files.update({"spectrum_plot": "spectrum.png", "spectrum_arrays": "spectrum.npz"})

    scores = {
        label: (spectral_scores(spectra[label]) if spectra[label] is not None else None)
        for label in CLASS_NAMES
    }
    report.update(
        {
            "pixel_stats": pixel_stats,
            "spectrum": {
                "size": cfg.spectrum_size,
                "n_images": {label: pixel_stats[label]["n_images"] for label in CLASS_NAMES},
                "scores": scores,
                "spectral_peak_score": {
                    k: (v["spectral_peak_score"] if v else None) for k, v in scores.items()
                },
            },
            "files": {**files, "report": "eda.json"},
        }
    )
    (out_dir / "eda.json").write_text(json.dumps(report, indent=2) + "\n")

    counts = report["counts"]
    log.info(
        "eda: %d images (%s); splits %s",
        counts["total"],
        ", ".join(f"{k} {v}" for k, v in counts["per_class"].items()),
        ", ".join(f"{s} {c['total']}" for s, c in counts["per_split"].items()),
    )
    top_sizes = dict(list(report["sizes"]["all"].items())[:5])
    log.info("eda: formats %s; most common sizes %s", report["formats"]["all"], top_sizes)
    for label in CLASS_NAMES:
        stats = pixel_stats[label]
        if stats["mean"]:
            log.info(
                "eda: %s mean RGB %s, std %s, spectral peak score %.3f",
                label,
                [round(v, 1) for v in stats["mean"].values()],
                [round(v, 1) for v in stats["std"].values()],
                scores[label]["spectral_peak_score"],
            )
    log.info("eda: wrote %s", ", ".join(sorted(files.values())))
    return report

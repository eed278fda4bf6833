"""Integrated gradients (Sundararajan, Taly & Yan 2017): which pixels moved p(fake).

For an input x, a baseline x' and the model's p(fake) output F, the attribution of pixel i is

    IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x'))/dx_i da

computed here as in the seed project: ``steps`` = m interpolation steps (a = 0, 1/m, ..., 1, so
m + 1 images on the straight path), gradients from ``tf.GradientTape`` over batches of those
interpolated images, and the trapezoidal rule for the integral (the mean of the m averages of
neighbouring gradients). The baseline is a black image (all zeros) or uniform noise in 0..255
(seeded). Inputs are what the saved model takes: raw RGB 0..255 at its input size.

Completeness: the attributions of an image sum to F(x) - F(x'), up to the error of the
integration. :class:`IGResult` reports that error per image, absolutely and relative to
|F(x) - F(x')| (left out, ``None``, when that difference is below 0.01: a relative error of a
near-zero difference says nothing). More steps shrink it; it is the check that the steps suffice.

Heatmaps: per image, the input, the magnitude of the attributions (summed over channels,
clipped at their 99th percentile) over a grey copy of it, and the signed attributions (red:
towards fake, blue: towards real).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: |F(x) - F(x')| below which no relative completeness error is reported.
MIN_DELTA = 0.01


@dataclass
class IGResult:
    attributions: np.ndarray  # [n, h, w, 3]
    p_input: np.ndarray  # F(x)
    p_baseline: np.ndarray  # F(x')
    baseline: np.ndarray  # [h, w, 3] (or [n, h, w, 3])
    steps: int

    @property
    def attribution_sums(self) -> np.ndarray:
        return self.attributions.reshape(len(self.attributions), -1).sum(axis=1)

    @property
    def delta(self) -> np.ndarray:
        return self.p_input - self.p_baseline

    @property
    def abs_error(self) -> np.ndarray:
        return np.abs(self.attribution_sums - self.delta)

    @property
    def rel_error(self) -> list[float | None]:
        return [
            float(err / abs(d)) if abs(d) >= MIN_DELTA else None
            for err, d in zip(self.abs_error, self.delta)
        ]


def make_baseline(kind: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A black image (zeros) or seeded uniform noise in 0..255, float32 of ``shape``."""
    if kind == "black":
        return np.zeros(shape, dtype="float32")
    if kind == "noise":
        return np.random.default_rng(seed).uniform(0.0, 255.0, shape).astype("float32")
    raise ValueError(f"unknown baseline {kind!r}; expected 'black' or 'noise'")


def _p_fake_tensor(outputs: Any) -> Any:
    # column 1 of a two-way softmax, column 0 of a sigmoid (as fakeface.model.classifier.probabilities_of_fake)
    return outputs[:, 1] if outputs.shape[-1] == 2 else outputs[:, 0]


def _gradient_fn(model: Any) -> Any:
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def gradients(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(images)
            p = tf.cast(_p_fake_tensor(model(images, training=False)), tf.float32)
        # images are independent in inference mode, so d(sum p)/dx_k = dp_k/dx_k
        return tape.gradient(p, images), p

    return gradients


def integrated_gradients(
    model: Any,
    images: np.ndarray,
    baseline: str | np.ndarray = "black",
    steps: int = 64,
    batch_size: int = 32,
    seed: int = 0,
) -> IGResult:
    """IG attributions of p(fake) for ``images`` (float ``[n, h, w, 3]``, raw 0..255).

    ``steps`` is m, 20..1000; each image costs m + 1 forward and backward passes, in batches of
    ``batch_size`` interpolated images (the last batch padded so the graph is traced once).
    """
    import tensorflow as tf

    if not 20 <= int(steps) <= 1000:
        raise ValueError(f"steps must be between 20 and 1000, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [n, h, w, 3], got {images.shape}")
    base = make_baseline(baseline, images.shape[1:], seed) if isinstance(baseline, str) else np.asarray(baseline, "float32")
    if base.shape not in (images.shape[1:], images.shape):
        raise ValueError(f"baseline shape {base.shape} does not match images {images.shape}")
    gradients = _gradient_fn(model)
    alphas = np.linspace(0.0, 1.0, int(steps) + 1, dtype="float32")
    attributions = np.zeros_like(images)
    p_input = np.zeros(len(images))
    p_baseline = np.zeros(len(images))
    for i, image in enumerate(images):
        start = base if base.ndim == 3 else base[i]
        difference = image - start
        grads: list[np.ndarray] = []
        probs: list[np.ndarray] = []
        for lo in range(0, len(alphas), batch_size):
            chunk = alphas[lo : lo + batch_size]
            real = len(chunk)
            if real < batch_size:
                chunk = np.pad(chunk, (0, batch_size - real), mode="edge")
            path = start[None] + chunk[:, None, None, None] * difference[None]
            g, p = gradients(tf.constant(path))
            grads.append(g.numpy()[:real])
            probs.append(p.numpy()[:real])
        g = np.concatenate(grads).astype("float64")
        average = ((g[:-1] + g[1:]) / 2).mean(axis=0)  # trapezoidal rule, step 1/m
        attributions[i] = (difference * average).astype("float32")
        p_all = np.concatenate(probs)
        p_baseline[i], p_input[i] = float(p_all[0]), float(p_all[-1])
    return IGResult(attributions, p_input, p_baseline, base, int(steps))


# --------------------------------------------------------------------------- choosing images


def select_examples(labels: np.ndarray, p_fake: np.ndarray, threshold: float, per_class: int) -> list[int]:
    """Up to ``per_class`` indices per class, wrong and right predictions mixed.

    Per class: half (rounded up) from the wrong predictions, the most confidently wrong first,
    the rest from the right ones, the most confident first; a short side is filled from the
    other. Returned real first, then fake.
    """
    labels = np.asarray(labels).astype(int)
    p_fake = np.asarray(p_fake, dtype="float64")
    called = (p_fake >= threshold).astype(int)
    chosen: list[int] = []
    for cls in (0, 1):
        confidence = p_fake if cls == 1 else 1 - p_fake  # in the true class
        members = np.flatnonzero(labels == cls)
        wrong = [int(i) for i in members[np.argsort(confidence[members], kind="stable")] if called[i] != cls]
        right = [int(i) for i in members[np.argsort(-confidence[members], kind="stable")] if called[i] == cls]
        n_wrong = min(len(wrong), -(-per_class // 2))
        n_right = min(len(right), per_class - n_wrong)
        n_wrong = min(len(wrong), per_class - n_right)
        chosen += wrong[:n_wrong] + right[:n_right]
    return chosen


# --------------------------------------------------------------------------- pictures


def heatmap(attributions: np.ndarray, signed: bool = False, percentile: float = 99.0) -> np.ndarray:
    """A 2-D map from ``[h, w, 3]`` attributions: summed over channels, scaled to [0, 1]
    (or [-1, 1] when ``signed``) by their ``percentile`` magnitude, and clipped."""
    summed = np.asarray(attributions, dtype="float64").sum(axis=-1)
    values = summed if signed else np.abs(summed)
    scale = np.percentile(np.abs(values), percentile)
    if scale <= 0:
        return np.zeros_like(values)
    return np.clip(values / scale, -1.0 if signed else 0.0, 1.0)


def save_overlay(image: np.ndarray, attributions: np.ndarray, title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picture = np.clip(np.asarray(image) / 255.0, 0, 1)
    grey = picture.mean(axis=-1)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    axes[0].imshow(picture)
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(grey, cmap="gray", vmin=0, vmax=1)
    axes[1].imshow(heatmap(attributions), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    axes[1].set_title("|attribution|", fontsize=9)
    axes[2].imshow(heatmap(attributions, signed=True), cmap="bwr", vmin=-1, vmax=1)
    axes[2].set_title("signed (red: towards fake)", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(text).stem)[:limit] or "image"


def explain_images(
    model: Any,
    images: np.ndarray,
    names: list[str],
    out_dir: str | Path,
    *,
    threshold: float = 0.5,
    labels: np.ndarray | None = None,
    baseline: str = "black",
    steps: int = 64,
    batch_size: int = 32,
    seed: int = 0,
    clear: bool = False,
) -> dict[str, Any]:
    """IG for ``images``; one overlay PNG per image and ``explain.json`` under ``out_dir``.

    ``clear`` first removes the ``ig_*.png`` files of an earlier run from ``out_dir``.

    ``labels`` (0 real, 1 fake), when known, mark each prediction right or wrong. Returns the
    JSON content: settings, and per image its file, p(fake), F(baseline), sum of attributions and
    the completeness errors.
    """
    from fakeface import CLASS_NAMES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if clear:
        for stale in out_dir.glob("ig_*.png"):
            stale.unlink()
    result = integrated_gradients(model, images, baseline, steps, batch_size, seed)
    entries = []
    for i, name in enumerate(names):
        p = float(result.p_input[i])
        predicted = CLASS_NAMES[int(p >= threshold)]
        entry: dict[str, Any] = {"path": name, "p_fake": p, "predicted": predicted}
        title = f"{Path(name).name}: p(fake) {p:.3f} -> {predicted}"
        tag = predicted
        if labels is not None:
            actual = CLASS_NAMES[int(labels[i])]
            correct = actual == predicted
            entry.update({"actual": actual, "correct": correct})
            title = f"{Path(name).name}: {actual}, p(fake) {p:.3f} -> {predicted} ({'right' if correct else 'WRONG'})"
            tag = f"{actual}_{'right' if correct else 'wrong'}"
        rel = result.rel_error[i]
        entry.update(
            {
                "p_baseline": float(result.p_baseline[i]),
                "attribution_sum": float(result.attribution_sums[i]),
                "delta": float(result.delta[i]),
                "abs_error": float(result.abs_error[i]),
                "rel_error": rel,
            }
        )
        title += f"\nIG m={steps}, {baseline} baseline; sum {entry['attribution_sum']:+.3f} vs F(x)-F(x') {entry['delta']:+.3f}"
        figure = out_dir / f"ig_{i:02d}_{tag}_{_slug(name)}.png"
        save_overlay(images[i], result.attributions[i], title, figure)
        entry["figure"] = figure.name
        entries.append(entry)
    rel = [e["rel_error"] for e in entries if e["rel_error"] is not None]
    summary = {
        "method": "integrated gradients",
        "baseline": baseline if isinstance(baseline, str) else "custom",
        "steps": int(steps),
        "rule": "trapezoidal",
        "output": "p(fake)",
        "min_delta_for_rel_error": MIN_DELTA,
        "max_abs_error": max((e["abs_error"] for e in entries), default=None),
        "max_rel_error": max(rel, default=None),
        "mean_rel_error": float(np.mean(rel)) if rel else None,
        "images": entries,
    }
    (out_dir / "explain.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "integrated gradients: %d image(s), m=%d, completeness max abs error %.2e, max rel error %s",
        len(entries), steps, summary["max_abs_error"] or 0.0,
        "n/a" if summary["max_rel_error"] is None else f"{summary['max_rel_error']:.2%}",
    )
    return summary

"""The embedded synthetic data set: a tiny stand-in for Kaggle's "140k real and fake faces".

Why it exists: the quick start (and CI) must run the whole pipeline without a download, so the
pipeline needs data that *looks* like the Kaggle set on disk and that a small CNN can really
learn from, for the *right* reason.

What the images are. Every image, real or fake, starts from the same kind of half-resolution
"natural" picture (colour 1/f noise, the spectrum of natural photographs, plus a few soft
ellipses in random colours). It is then brought up to full size in one of two ways:

* **real**: a high-quality resampler (PIL Lanczos), as a camera pipeline or a careful resize
  would do. It leaves no periodic trace.
* **fake**: the way a GAN generator upsamples: zero insertion followed by a fixed 6x6
  transposed-convolution kernel (:data:`GAN_KERNEL_1D`, :data:`GAN_PHASE_GAIN`). Its four
  polyphase sub-kernels do not sum to exactly the same gain, so the output carries a faint,
  content-modulated checkerboard: peaks at the Nyquist frequency (N/2) of the Fourier spectrum,
  the artifact that real GAN detectors pick up (Odena et al. 2016, "Deconvolution and
  checkerboard artifacts"; Frank et al. 2020, "Leveraging frequency analysis for deep fake
  image recognition").

Why the two classes share one base generator and identical post-processing: anything that
differs between the classes *other than* the upsampling artifact is a shortcut. A detector that
learns "fakes are brighter" or "fake files are bigger" reports a great test score on this data
and is useless on real data. So both classes draw colours, textures, contrast and sensor-noise
strength from the same distributions, and are JPEG-encoded with exactly the same settings
(quality, chroma subsampling, no optimisation, no metadata): otherwise the quantisation tables or
the Huffman tables alone would tell the classes apart. The kernel is blurrier than Lanczos by
just enough that its checkerboard does not make fake files systematically larger.
:func:`global_statistics` exists to check this: a logistic regression on mean colour and file
size stays at chance, while a few Fourier-peak features separate the classes (see the tests).

Known limits: the fakes are also slightly smoother than the reals between a quarter and a half
of the base resolution (the price of keeping file sizes equal), so a CNN may learn some
"smoothness" besides the checkerboard; both are upsampling traces. The checkerboard is about one
grey level: at JPEG quality 75, or at 16 px, the Fourier-peak features reach only ~0.85 AUC.

Determinism: every image has its own :class:`numpy.random.Generator` seeded from
``(seed, class, index)`` (and the ids and CSV order their own), so the same seed gives
byte-identical files, and no global random state is touched.
"""

from __future__ import annotations

import io
import logging
import shutil
import string
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fakeface import SPLITS
from fakeface.config import SplitFractions, SyntheticConfig
from fakeface.logs import progress

log = logging.getLogger(__name__)

#: Folder of the images inside the data set root, as in the Kaggle archive.
IMAGES_SUBDIR = Path("real_vs_fake") / "real-vs-fake"
#: Columns of the Kaggle CSVs after the unnamed index column.
CSV_COLUMNS = ("original_path", "id", "label", "label_str", "path")
#: Label coding of the Kaggle CSVs (note: the reverse of :data:`fakeface.LABEL_INDEX`).
KAGGLE_LABEL = {"real": 1, "fake": 0}

#: 1-D taps of the GAN upsampler (a 6-tap kernel, applied along rows and columns after zero
#: insertion: even taps feed one output phase, odd taps the other, each phase summing to 1).
#: It is 55% of a truncated Lanczos kernel plus 45% of bilinear: a little blurrier than the
#: real images' Lanczos in the pass band (as the fixed blur in StyleGAN's upsampler is) and with
#: more aliasing above it. The blend is tuned (with :data:`GAN_PHASE_GAIN`) so that the bytes
#: the blur saves in the JPEG offset the bytes the checkerboard costs: at 64 px and quality 92,
#: fake files are on average within ~0.03 standard deviations of the real ones in size.
GAN_KERNEL_1D = np.array([-0.071, 0.257, 0.814, 0.814, 0.257, -0.071])
#: Sum of each of the four polyphase sub-kernels of the 2-D kernel (by row and column parity of
#: the output pixel): the uneven overlap of a stride-2 transposed convolution, one phase gets
#: 2.8% more gain than the other three. Mean 1, so mean brightness is unchanged, and the result
#: is a content-modulated checkerboard of about +-0.7% of the local brightness (about one grey
#: level): invisible, but it puts peaks at (N/2, 0), (0, N/2) and (N/2, N/2) of the spectrum
#: that survive JPEG at quality 92. Stronger, and the JPEG cost of the checkerboard shows in the
#: file size (or needs a blurrier kernel to hide); weaker, and it drowns in the sensor noise.
GAN_PHASE_GAIN = np.array([[1.021, 0.993], [0.993, 0.993]])
#: Per-image sensor noise, standard deviation in 0..255 units, drawn log-uniformly. The wide
#: range makes JPEG file sizes spread far more than the upsampling can shift them.
NOISE_SIGMA = (0.4, 6.0)
#: Chroma subsampling of the JPEG, the same for both classes (PIL's default, libjpeg 4:2:0).
JPEG_SUBSAMPLING = "4:2:0"

_ALPHANUMERIC = np.array(list(string.ascii_uppercase + string.digits))  # letters first


def generate(cfg: SyntheticConfig, split: SplitFractions, out_dir: Path, seed: int) -> Path:
    """Write a small data set in the Kaggle "140k real and fake faces" layout; return its root.

    Layout (exactly the Kaggle one)::

        out_dir/real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}/<id>.jpg
        out_dir/{train,valid,test}.csv   # ,original_path,id,label,label_str,path

    ``label`` is 1 for real and 0 for fake, as in the Kaggle CSVs, and ``path`` is relative to
    ``real_vs_fake/real-vs-fake/``. ``cfg.images_per_class`` images per class are divided over
    the splits by ``split`` (rounded, at least one per split and class). Anything already under
    the image folder is replaced, so a rerun never mixes two data sets.
    """
    out_dir = Path(out_dir)
    counts = split_counts(cfg.images_per_class, split)
    image_root = out_dir / IMAGES_SUBDIR
    if image_root.exists():
        shutil.rmtree(image_root)
    for split_name in SPLITS:
        for label_str in KAGGLE_LABEL:
            (image_root / split_name / label_str).mkdir(parents=True, exist_ok=True)

    ids = {label_str: _make_ids(label_str, cfg.images_per_class, seed) for label_str in KAGGLE_LABEL}
    jobs = []  # (label_str, index within class, split)
    for label_str in KAGGLE_LABEL:
        index = 0
        for split_name, count in zip(SPLITS, counts, strict=True):
            for _ in range(count):
                jobs.append((label_str, index, split_name))
                index += 1
    log.info(
        "generating %d synthetic images (%d px, JPEG q%d) under %s; per class: %s",
        len(jobs),
        cfg.image_size,
        cfg.jpeg_quality,
        out_dir,
        ", ".join(f"{s} {c}" for s, c in zip(SPLITS, counts, strict=True)),
    )

    rows: dict[str, list[dict[str, object]]] = {s: [] for s in SPLITS}
    for label_str, index, split_name in progress(jobs, desc="synthetic", total=len(jobs)):
        image_id = ids[label_str][index]
        rng = np.random.default_rng([seed, KAGGLE_LABEL[label_str], index])
        fake = label_str == "fake"
        data = render_jpeg(rng, fake=fake, size=cfg.image_size, quality=cfg.jpeg_quality)
        relative = f"{split_name}/{label_str}/{image_id}.jpg"
        (image_root / relative).write_bytes(data)
        rows[split_name].append(
            {
                "original_path": f"synthetic/seed{seed}/{label_str}/{image_id}.jpg",
                "id": image_id,
                "label": KAGGLE_LABEL[label_str],
                "label_str": label_str,
                "path": relative,
            }
        )

    for offset, split_name in enumerate(SPLITS):
        frame = pd.DataFrame(rows[split_name], columns=list(CSV_COLUMNS))
        # Kaggle's CSVs list real and fake images interleaved; shuffle (deterministically) so
        # that no consumer can get away with relying on the order.
        order = np.random.default_rng([seed, 2, offset]).permutation(len(frame))
        frame = frame.iloc[order].reset_index(drop=True)
        frame.to_csv(out_dir / f"{split_name}.csv", index=True)
    log.info("synthetic data set written to %s", out_dir)
    return out_dir


def split_counts(total: int, split: SplitFractions) -> tuple[int, int, int]:
    """Images per class in (train, valid, test): rounded fractions, each at least 1, summing to total.

    Largest-remainder rounding (so the counts always add up), then any empty split takes one
    image from the largest.
    """
    if total < len(SPLITS):
        raise ValueError(f"need at least {len(SPLITS)} images per class, got {total}")
    exact = [total * f for f in (split.train, split.valid, split.test)]
    counts = [int(np.floor(x)) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])  # stable on ties
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    for i in range(len(counts)):
        if counts[i] == 0:
            counts[int(np.argmax(counts))] -= 1
            counts[i] = 1
    return counts[0], counts[1], counts[2]


def _make_ids(label_str: str, n: int, seed: int) -> list[str]:
    """Kaggle-style ids: zero-padded numbers for real (FFHQ), 10 random alphanumerics for fake."""
    rng = np.random.default_rng([seed, 3, KAGGLE_LABEL[label_str]])
    if label_str == "real":
        width = max(5, len(str(10 * n)))
        numbers = rng.choice(10**width, size=n, replace=False)
        return [f"{number:0{width}d}" for number in numbers]
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        # A leading letter keeps pandas from ever reading an id as a number.
        first = _ALPHANUMERIC[rng.integers(0, 26)]
        candidate = first + "".join(rng.choice(_ALPHANUMERIC, size=9))
        if candidate not in seen:
            seen.add(candidate)
            ids.append(candidate)
    return ids


# --------------------------------------------------------------------------- the image model


def render_jpeg(rng: np.random.Generator, fake: bool, size: int, quality: int) -> bytes:
    """One image as JPEG bytes: shared base, class-specific x2 upsampling, shared post-processing."""
    half = (size + 1) // 2
    base = _base_image(rng, half)
    up = _gan_upsample(base) if fake else _resample_upsample(base)
    up = up[:size, :size]
    # Post-processing, drawn identically for both classes: sensor noise of random strength.
    sigma = float(np.exp(rng.uniform(np.log(NOISE_SIGMA[0]), np.log(NOISE_SIGMA[1]))))
    noisy = up + rng.normal(0.0, sigma, size=up.shape)
    pixels = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    # Identical encoder settings for both classes, baseline, no EXIF/ICC: the class must not be
    # readable from the quantisation or Huffman tables, nor from metadata.
    Image.fromarray(pixels, "RGB").save(
        buffer,
        format="JPEG",
        quality=quality,
        subsampling=JPEG_SUBSAMPLING,
        optimize=False,
        progressive=False,
    )
    return buffer.getvalue()


def _base_image(rng: np.random.Generator, n: int) -> np.ndarray:
    """A natural-looking n x n x 3 float image in 0..255: colour 1/f noise plus soft ellipses.

    Natural photographs have an amplitude spectrum close to 1/f; the exponent, contrast,
    saturation, colours and shapes are drawn per image over wide ranges so that no global
    statistic is constant.
    """
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1.0
    exponent = rng.uniform(0.8, 1.6)
    amplitude = radius**-exponent
    amplitude[0, 0] = 0.0
    spectra = rng.normal(size=(3, n, n // 2 + 1)) + 1j * rng.normal(size=(3, n, n // 2 + 1))
    fields = np.fft.irfft2(spectra * amplitude, s=(n, n), axes=(1, 2))
    fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-12
    # One luminance field shared by the channels, two chroma fields along random colour axes.
    saturation = rng.uniform(0.0, 0.6)
    chroma_axes = rng.normal(size=(2, 3))
    chroma_axes -= chroma_axes.mean(axis=1, keepdims=True)
    chroma_axes /= np.linalg.norm(chroma_axes, axis=1, keepdims=True) + 1e-12
    texture = fields[0][..., None] + saturation * np.einsum("kyx,kc->yxc", fields[1:], chroma_axes)
    contrast = rng.uniform(8.0, 55.0)
    image = rng.uniform(50.0, 205.0, size=3) + contrast * texture

    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) + 0.5
    for _ in range(int(rng.integers(1, 6))):
        cy, cx = rng.uniform(0, n, size=2)
        ry, rx = rng.uniform(0.08, 0.45, size=2) * n
        angle = rng.uniform(0, np.pi)
        cos, sin = np.cos(angle), np.sin(angle)
        u = ((xx - cx) * cos + (yy - cy) * sin) / rx
        v = (-(xx - cx) * sin + (yy - cy) * cos) / ry
        distance = (np.sqrt(u * u + v * v) - 1.0) * min(rx, ry)  # ~ pixels outside the edge
        softness = rng.uniform(0.4, 2.0)
        mask = 1.0 / (1.0 + np.exp(np.clip(distance / softness, -50, 50)))
        opacity = rng.uniform(0.3, 0.9)
        colour = rng.uniform(0.0, 255.0, size=3)
        # The shape keeps some of the texture underneath, as a real object would have its own.
        shade = colour + rng.uniform(0.2, 0.8) * (image - image.mean(axis=(0, 1)))
        weight = (opacity * mask)[..., None]
        image = image * (1.0 - weight) + shade * weight
    return np.clip(image, 0.0, 255.0)


def _resample_upsample(base: np.ndarray) -> np.ndarray:
    """Real: x2 with PIL's Lanczos filter, channel by channel in float (no rounding)."""
    n = base.shape[0]
    channels = []
    for c in range(3):
        channel = Image.fromarray(base[..., c].astype(np.float32), "F")
        channels.append(np.asarray(channel.resize((2 * n, 2 * n), Image.Resampling.LANCZOS)))
    return np.stack(channels, axis=-1).astype(np.float64)


def _gan_upsample(base: np.ndarray) -> np.ndarray:
    """Fake: x2 by zero insertion and a fixed 6x6 kernel, i.e. a stride-2 transposed convolution.

    The kernel is ``outer(GAN_KERNEL_1D, GAN_KERNEL_1D)`` with each of its four polyphase
    sub-kernels scaled by :data:`GAN_PHASE_GAIN`. Computed in polyphase form (after zero
    insertion, even output rows only see the even taps and odd rows the odd taps), which is the
    same arithmetic without the multiplications by zero.
    """
    rows = _transposed_conv_axis(base, GAN_KERNEL_1D, axis=0)
    out = _transposed_conv_axis(rows, GAN_KERNEL_1D, axis=1)
    gain = np.tile(GAN_PHASE_GAIN, (out.shape[0] // 2, out.shape[1] // 2))
    return out * gain[..., None]


def _transposed_conv_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """x2 along one axis: zero insertion, then correlation with an even-length kernel.

    Output sample ``2i + p`` is ``sum_t kernel[t] * u[2i + p - t + c]`` with ``u`` the
    zero-inserted signal and ``c = len(kernel) // 2 - 1`` (which centres a symmetric kernel, so
    that output samples sit at input positions i -/+ 1/4 as with PIL's resize); only the taps
    with ``t = p + c (mod 2)`` meet a non-zero sample. Borders repeat the edge pixel.
    """
    x = np.moveaxis(x, axis, 0)
    n, length = x.shape[0], len(kernel)
    centre, pad = length // 2 - 1, length // 2
    padded = np.pad(x, [(pad, pad)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    phases = []
    for p in (0, 1):
        acc = np.zeros_like(x)
        for t in range(length):
            if (t - p - centre) % 2 == 0:
                shift = (p - t + centre) // 2
                acc += kernel[t] * padded[pad + shift : pad + shift + n]
        phases.append(acc)
    out = np.stack(phases, axis=1).reshape(2 * n, *x.shape[1:])
    return np.moveaxis(out, 0, axis)


# --------------------------------------------------------------------------- checks


def global_statistics(paths: Iterable[str | Path]) -> np.ndarray:
    """Per file: [mean R, mean G, mean B, file size in bytes], shape (n, 4).

    The trivial features a shortcut-learning detector could use; on this data set a classifier
    on them must stay at chance (EDA and the tests use it to check that).
    """
    stats = []
    for path in paths:
        path = Path(path)
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
        stats.append([*pixels.mean(axis=(0, 1)), float(path.stat().st_size)])
    return np.asarray(stats, dtype=np.float64).reshape(-1, 4)


def spectral_peak_features(paths: Iterable[str | Path]) -> np.ndarray:
    """Per file: log energy at the x2-upsampling peaks of the Fourier spectrum, relative to neighbours.

    Features (grey level, mean removed, log magnitude of the 2-D FFT): the bins (N/2, 0),
    (0, N/2) and (N/2, N/2), each minus the mean of its neighbouring bins along the axes. These
    are where a stride-2 transposed convolution leaves its checkerboard, and where a smooth
    resampler leaves almost nothing.
    """
    features = []
    for path in paths:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"), dtype=np.float64)
        features.append(_peak_features(grey))
    return np.asarray(features, dtype=np.float64).reshape(-1, 3)


def _peak_features(grey: np.ndarray) -> list[float]:
    n = min(grey.shape) // 2 * 2
    grey = grey[:n, :n] - grey[:n, :n].mean()
    log_mag = np.log(np.abs(np.fft.fft2(grey)) + 1e-6)
    h = n // 2

    def contrast(y: int, x: int, neighbours: Sequence[tuple[int, int]]) -> float:
        around = [log_mag[(y + dy) % n, (x + dx) % n] for dy, dx in neighbours]
        return float(log_mag[y, x] - np.mean(around))

    around = [(-2, 0), (2, 0), (0, -2), (0, 2), (-1, 0), (1, 0), (0, -1), (0, 1)]
    return [contrast(h, 0, around), contrast(0, h, around), contrast(h, h, around)]

"""Seeded, stateless augmentations: each does what it says, deterministically, in eager and graph.

Every registered augmentation needs a ``test_<name>_...`` here (a test below checks), and the
pinned seeds and fingerprints at the end hold each one's draws to what they were when the
registry replaced the if/elif: a seed must give the same augmented images release after release.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fakeface.config.augment import AUGMENTATION_ORDER, AugmentConfig, list_augmentations, seed_count

tf = pytest.importorskip("tensorflow")

from fakeface.data.augmentations import (  # noqa: E402
    OPS,
    augment_image,
    augmentation_seeds,
    build_augmenter,
    gaussian_blur,
    only,
    rotate,
)

NAMES = list_augmentations()  # in the order they are applied
NONE = {name: {"enabled": False} for name in NAMES}
SEEDS = [tf.constant([7, k], dtype=tf.int64) for k in range(60)]


def config(**enabled) -> AugmentConfig:
    """A config with only the named augmentations on (values: their extra parameters)."""
    sections = dict(NONE)
    for name, extra in enabled.items():
        sections[name] = {"enabled": True, **(extra or {})}
    return AugmentConfig(**sections)


def noise(h=48, w=48, low=0, high=255, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, (h, w, 3)).astype(np.float32)


def ramps(size=64) -> np.ndarray:
    """Channel 0 grows left to right, channel 1 top to bottom, channel 2 constant."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    image = np.zeros((size, size, 3), np.float32)
    image[..., 0] = ramp[np.newaxis, :]
    image[..., 1] = ramp[:, np.newaxis]
    image[..., 2] = 100.0
    return image


def run(image, seed, cfg) -> np.ndarray:
    out = augment_image(tf.constant(image), seed, cfg)
    assert out.dtype == tf.float32 and tuple(out.shape) == image.shape
    return out.numpy()


# --------------------------------------------------------------------------- each augmentation


def test_flip_mirrors_about_half_the_time():
    image = noise(32, 40)
    cfg = config(flip=None)
    flipped = 0
    for seed in SEEDS:
        out = run(image, seed, cfg)
        if np.array_equal(out, image[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(out, image)
    assert 0.3 * len(SEEDS) <= flipped <= 0.7 * len(SEEDS)


def test_rot90_turns_by_whole_quarters_exactly_and_keeps_a_non_square_shape():
    square = noise(32, 32, seed=3)
    turns = []
    for seed in SEEDS:
        out = run(square, seed, config(rot90=None))
        k = next(k for k in range(4) if np.array_equal(out, np.rot90(square, k)))  # the pixels, moved
        turns.append(k)
    assert set(turns) == {0, 1, 2, 3}
    wide = noise(32, 40, seed=4)
    for seed in SEEDS[:12]:
        out = run(wide, seed, config(rot90=None))
        assert np.array_equal(out, wide) or np.array_equal(out, np.rot90(wide, 2))


def test_mask_blacks_out_one_square_and_leaves_the_rest():
    image = noise(low=1, high=255, seed=5)  # no pixel is 0 before the mask
    sides = []
    for seed in SEEDS:
        out = run(image, seed, config(mask={"max_fraction": 0.5}))
        black = np.all(out == 0, axis=2)
        np.testing.assert_array_equal(out[~black], image[~black])
        ys, xs = np.nonzero(black)
        side = ys.max() - ys.min() + 1
        assert black.sum() == side * side and xs.max() - xs.min() + 1 == side  # one square
        sides.append(side)
    assert 1 <= min(sides) and max(sides) <= 24 and len(set(sides)) > 5


def test_brightness_shifts_every_pixel_by_one_bounded_delta():
    image = noise(low=100, high=156)  # mid-grey: no clipping at +-25.5
    cfg = config(brightness={"max_delta": 0.1})
    deltas = []
    for seed in SEEDS:
        shift = run(image, seed, cfg) - image
        np.testing.assert_allclose(shift, shift.flat[0], atol=1e-3)  # one delta for all pixels
        deltas.append(float(shift.mean()))
    assert max(abs(d) for d in deltas) <= 0.1 * 255 + 1e-3
    assert min(deltas) < -5 and max(deltas) > 5  # it does shift, both ways


def test_contrast_scales_std_within_bounds():
    image = noise(low=110, high=146)
    cfg = config(contrast={"lower": 0.5, "upper": 1.5})
    factors = []
    for seed in SEEDS:
        out = run(image, seed, cfg)
        ratio = out.std(axis=(0, 1)) / image.std(axis=(0, 1))
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)  # one factor for all channels
        np.testing.assert_allclose(out.mean(axis=(0, 1)), image.mean(axis=(0, 1)), atol=1e-2)
        factors.append(float(ratio[0]))
    assert 0.5 - 1e-4 <= min(factors) and max(factors) <= 1.5 + 1e-4
    assert max(factors) - min(factors) > 0.5
    # lower == upper is a fixed factor.
    fixed = run(image, SEEDS[0], config(contrast={"lower": 0.8, "upper": 0.8}))
    np.testing.assert_allclose(fixed.std(axis=(0, 1)) / image.std(axis=(0, 1)), 0.8, rtol=1e-4)


def _slopes(out: np.ndarray) -> tuple[float, float]:
    """Ramp slopes (per pixel) of channel 0 along x and channel 1 along y."""
    size = out.shape[0]
    x = (out[size // 2, -1, 0] - out[size // 2, 0, 0]) / (size - 1)
    y = (out[-1, size // 2, 1] - out[0, size // 2, 1]) / (size - 1)
    return float(x), float(y)


def test_crop_is_a_resized_sub_window():
    image = ramps()
    slope = 255 / 63
    cfg = config(crop={"min_fraction": 0.5})
    fractions, corners = [], []
    for seed in SEEDS:
        out = run(image, seed, cfg)
        sx, sy = _slopes(out)
        assert sx == pytest.approx(sy, rel=1e-3)  # same fraction of both sides: aspect kept
        fractions.append(sx / slope)  # the ramp is stretched by 1 / fraction
        corners.append(out[0, 0, 0])
        # Values come from inside the image: a sub-range of the ramp, never outside it.
        assert out[..., 0].min() >= -1e-3 and out[..., 0].max() <= 255 + 1e-3
        np.testing.assert_allclose(out[..., 2], 100.0, atol=1e-3)
    # Whole-pixel crops and edge clamping in the resize: allow a couple of pixels of 64.
    assert 0.5 - 0.04 <= min(fractions) and max(fractions) <= 1 + 1e-3
    assert min(fractions) < 0.7  # it does crop, over the whole range
    assert np.ptp(corners) > 20  # ...at different places
    np.testing.assert_array_equal(run(image, SEEDS[0], config(crop={"min_fraction": 1.0})), image)


def test_zoom_is_a_centred_crop():
    image = ramps()
    slope = 255 / 63
    cfg = config(zoom={"max_fraction": 0.3})
    scales = []
    for seed in SEEDS:
        out = run(image, seed, cfg)
        sx, sy = _slopes(out)
        scales.append(sx / slope)
        assert sx == pytest.approx(sy, rel=1e-3)
        # Centred: the crop is symmetric about the middle of the ramp (to half a pixel).
        assert (out[32, 0, 0] + out[32, -1, 0]) / 2 == pytest.approx(127.5, abs=slope / 2 + 1e-3)
    assert 0.7 - 0.04 <= min(scales) and max(scales) <= 1 + 1e-3
    assert min(scales) < 0.8


def _line_angle(out: np.ndarray, centre: float) -> float:
    """Angle (degrees, counter-clockwise on screen) of a bright radial line's centroid."""
    weight = out[..., 0]
    ys, xs = np.indices(weight.shape)
    cx = (xs * weight).sum() / weight.sum() - centre
    cy = (ys * weight).sum() / weight.sum() - centre
    return math.degrees(math.atan2(-cy, cx))


def test_rotate_turns_an_asymmetric_pattern_within_max_degrees():
    size = 65
    image = np.zeros((size, size, 3), np.float32)
    image[32, 40:57] = 255.0  # a line from near the centre to the right: angle 0
    assert _line_angle(image, 32) == pytest.approx(0.0, abs=1e-6)
    # The helper's direction: +90 degrees moves the line to point up (counter-clockwise).
    assert _line_angle(rotate(image, tf.constant(math.pi / 2)).numpy(), 32) == pytest.approx(90, abs=1)
    cfg = config(rotate={"max_degrees": 30})
    angles = []
    for seed in SEEDS:
        out = run(image, seed, cfg)
        angle = _line_angle(out, 32)
        angles.append(angle)
        if abs(angle) > 2:
            assert not np.allclose(out, image)
    assert max(abs(a) for a in angles) <= 30 + 1.0
    assert min(angles) < -15 and max(angles) > 15


# --------------------------------------------------------------------------- general properties


def _combinations(k: int, most: int = 12) -> list[tuple[str, ...]]:
    """Every k-subset of the order when there are few, else ``most`` of them (fixed draw)."""
    every = list(itertools.combinations(NAMES, k))
    if len(every) <= most:
        return every
    picks = np.random.default_rng(k).choice(len(every), size=most, replace=False)
    return [every[i] for i in sorted(picks)]


@pytest.mark.parametrize("k", range(0, len(NAMES) + 1))
def test_every_combination_keeps_shape_dtype_range(k):
    image = noise(40, 56, seed=k)  # not square
    for names in _combinations(k):
        cfg = config(**{name: None for name in names})
        out = run(image, SEEDS[k], cfg)
        assert out.min() >= 0.0 and out.max() <= 255.0
        if not names:
            np.testing.assert_array_equal(out, image)


def test_deterministic_for_a_seed_and_seed_dtype():
    image = noise()
    cfg = config(**{name: None for name in NAMES})
    a = run(image, tf.constant([3, 4], tf.int64), cfg)
    b = run(image, tf.constant([3, 4], tf.int32), cfg)
    c = run(image, tf.constant([3, 5], tf.int64), cfg)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_each_augmentation_draws_independently_of_the_others():
    """All enabled equals the single-augmentation steps composed: toggling one leaves the rest."""
    image = noise()
    cfg = config(**{name: None for name in NAMES})
    seed = SEEDS[5]
    composed = image
    for name in cfg.enabled():
        composed = run(composed, seed, only(cfg, name))
    np.testing.assert_allclose(run(image, seed, cfg), composed, atol=1e-4)


def test_identity_when_nothing_enabled():
    cfg = AugmentConfig(flip={"enabled": False})
    assert cfg.enabled() == []
    image = noise()
    augmenter = build_augmenter(cfg)
    np.testing.assert_array_equal(augmenter(image, SEEDS[0]).numpy(), image)
    np.testing.assert_array_equal(run(image, SEEDS[0], cfg), image)


def test_works_inside_dataset_map_like_eager():
    images = np.stack([noise(seed=s) for s in range(4)])
    labels = np.array([0, 1, 0, 1], np.int64)
    cfg = config(**{name: None for name in NAMES})
    augmenter = build_augmenter(cfg)
    seeds = np.array([[1, k] for k in range(4)], np.int64)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels, seeds)).map(
        lambda image, label, seed: (augmenter(image, seed), label),
        num_parallel_calls=4,
        deterministic=True,
    )
    for k, (out, label) in enumerate(dataset):
        assert int(label) == labels[k]  # labels pass through untouched
        np.testing.assert_allclose(out.numpy(), run(images[k], tf.constant(seeds[k]), cfg), atol=1e-4)
    # Seeds streamed from Dataset.random, as the training pipeline does.
    pairs = tf.data.Dataset.random(seed=3).batch(2)
    streamed = tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices(images), pairs)).map(augmenter)
    first = [o.numpy() for o in streamed]
    second = [o.numpy() for o in streamed]  # a second pass over the same pipeline
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_static_shape_is_kept_in_graph_mode():
    cfg = config(**{name: None for name in NAMES})
    images = tf.data.Dataset.from_tensors(tf.zeros([40, 56, 3])).repeat(2)
    pairs = tf.data.Dataset.random(seed=1).batch(2)
    dataset = tf.data.Dataset.zip((images, pairs)).map(build_augmenter(cfg)).batch(2)
    assert dataset.element_spec.shape.as_list() == [None, 40, 56, 3]


# --------------------------------------------------------------------------- the issue-7 additions


def test_new_augmentations_are_appended_so_older_seeds_do_not_shift():
    """A split's first rows do not depend on how many rows there are: a new augmentation (next
    seed index, one more row) leaves every older one's seed as it was."""
    from fakeface.config.augment import get_augmentation

    by_seed = sorted(NAMES, key=lambda name: get_augmentation(name).seed_index)
    assert by_seed[:6] == ["flip", "crop", "zoom", "rotate", "brightness", "contrast"]
    seed = tf.constant([42, 3], tf.int64)
    six = tf.random.experimental.stateless_split(seed, num=6).numpy()
    now = tf.random.experimental.stateless_split(seed, num=seed_count()).numpy()
    np.testing.assert_array_equal(six, now[:6])


def test_stretch_scales_each_axis_by_its_own_factor():
    image = ramps()
    slope = 255 / 63
    cfg = config(stretch={"max_fraction": 0.3})
    ratios, xs, ys = [], [], []
    for seed in SEEDS:
        out = run(image, seed, cfg)
        sx, sy = _slopes(out)
        xs.append(sx / slope)  # the crop fraction along x: the endpoints span f of the ramp
        ys.append(sy / slope)
        ratios.append(sx / sy)
        np.testing.assert_allclose(out[..., 2], 100.0, atol=1e-3)
        # Centred (to the half pixel an odd margin leaves, in the original ramp).
        assert (out[32, 0, 0] + out[32, -1, 0]) / 2 == pytest.approx(127.5, abs=slope / 2 + 1e-2)
        assert (out[0, 32, 1] + out[-1, 32, 1]) / 2 == pytest.approx(127.5, abs=slope / 2 + 1e-2)
    for f in xs + ys:
        assert 0.7 - 0.04 <= f <= 1 + 1e-3
    assert min(xs) < 0.8 and min(ys) < 0.8
    assert max(ratios) > 1.1 and min(ratios) < 1 / 1.1  # anisotropic, either way round


def test_channel_shift_adds_one_bounded_offset_per_channel():
    image = noise(low=100, high=156)  # no clipping at +-0.1 * 255
    cfg = config(channel_shift={"max_delta": 0.1})
    offsets = []
    for seed in SEEDS:
        shift = run(image, seed, cfg) - image
        per_channel = shift.reshape(-1, 3)
        np.testing.assert_allclose(per_channel, per_channel[:1].repeat(len(per_channel), 0), atol=1e-3)
        offsets.append(per_channel[0])
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= 0.1 * 255 + 1e-3
    assert offsets.min() < -10 and offsets.max() > 10
    assert np.abs(offsets[:, 0] - offsets[:, 1]).max() > 5  # channels move independently


def test_color_jitter_scales_brightness_and_saturation_within_bounds_and_turns_the_hue():
    image = noise(low=60, high=160, seed=4)  # no clipping at +-10%
    gray = np.repeat(image[..., :1], 3, axis=2)
    cfg = config(color_jitter={"brightness": 0.1, "contrast": 0.0, "saturation": 0.3, "hue": 0.0})
    ratios, spreads = [], []
    for seed in SEEDS[:20]:
        out = run(image, seed, cfg)
        ratios.append(run(gray, seed, cfg).mean() / gray.mean())  # a grey image has no saturation to scale
        spreads.append((out.max(axis=2) - out.min(axis=2)).mean() / (image.max(axis=2) - image.min(axis=2)).mean())
    ratios, spreads = np.array(ratios), np.array(spreads)
    assert np.all(np.abs(ratios - 1) <= 0.1 + 1e-3) and ratios.min() < 0.97 and ratios.max() > 1.03
    assert spreads.min() < 0.85 and spreads.max() > 1.1  # the saturation moves both ways
    hue_only = config(color_jitter={"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.5})
    red = np.zeros((8, 8, 3), np.float32)
    red[..., 0] = 200.0
    turned = {tuple(np.round(run(red, seed, hue_only)[0, 0] / 40).astype(int)) for seed in SEEDS[:20]}
    assert len(turned) > 3  # red turned to other hues
    assert np.allclose(run(gray, SEEDS[0], hue_only), gray, atol=0.5)  # grey has no hue to turn


def _step(size=48) -> np.ndarray:
    image = np.full((size, size, 3), 80.0, np.float32)
    image[:, size // 2 :] = 170.0
    return image


def test_sharpness_is_an_unsharp_mask_with_a_bounded_amount():
    image = _step()
    detail = image - gaussian_blur(tf.constant(image), tf.constant(1.0), 3).numpy()
    cfg = config(sharpness={"max_amount": 1.5, "sigma": 1.0})
    amounts = []
    for seed in SEEDS:
        out = run(image, seed, cfg)
        amount = float((out - image).ravel() @ detail.ravel() / (detail.ravel() @ detail.ravel()))
        np.testing.assert_allclose(out, image + amount * detail, atol=1e-2)
        # Flat regions far from the edge are untouched; the edge overshoots (sharper).
        np.testing.assert_allclose(out[:, :10], image[:, :10], atol=1e-3)
        amounts.append(amount)
    assert -1e-4 <= min(amounts) and max(amounts) <= 1.5 + 1e-4
    assert max(amounts) > 1.0 and min(amounts) < 0.5
    sharpest = run(image, SEEDS[int(np.argmax(amounts))], cfg)
    assert sharpest.max() > 170 + 5 and sharpest.min() < 80 - 5


def test_blur_spreads_a_dot_by_at_most_max_sigma():
    size = 41
    image = np.zeros((size, size, 3), np.float32)
    image[20, 20] = 255.0
    cfg = config(blur={"max_sigma": 2.0})
    sigmas = []
    for seed in SEEDS:
        out = run(image, seed, cfg)[..., 0].astype(np.float64)
        assert out.sum() == pytest.approx(255.0, rel=1e-4)  # the kernel is normalised
        ys, xs = np.indices(out.shape)
        var_x = (out * (xs - 20) ** 2).sum() / out.sum()
        var_y = (out * (ys - 20) ** 2).sum() / out.sum()
        assert var_x == pytest.approx(var_y, rel=1e-3, abs=1e-4)  # isotropic
        sigmas.append(math.sqrt(var_x))
    assert max(sigmas) <= 2.0 + 0.05
    assert max(sigmas) > 1.5 and min(sigmas) < 0.7
    flat = np.full((24, 24, 3), 90.0, np.float32)
    np.testing.assert_allclose(run(flat, SEEDS[0], cfg), flat, atol=1e-3)  # mirrored edges: no dark rim


def test_downscale_removes_fine_detail_but_keeps_smooth_content():
    fine = noise(64, 64, low=60, high=200)
    cfg = config(downscale={"min_factor": 0.25})
    smooth = ramps()
    losses = []
    for seed in SEEDS[:20]:
        out = run(fine, seed, cfg)
        losses.append(float(np.abs(out - fine).mean()))
        assert out.min() >= 60 - 1e-3 and out.max() <= 200 + 1e-3  # bilinear: no overshoot
        # A linear ramp survives down- and up-scaling away from the borders.
        kept = run(smooth, seed, cfg)
        np.testing.assert_allclose(kept[16:48, 16:48, 0], smooth[16:48, 16:48, 0], atol=255 / 63)
    assert max(losses) > 15 and min(losses) < max(losses)  # detail lost, by a drawn amount


def test_jpeg_recompresses_at_a_drawn_quality_in_range():
    image = noise(32, 32, seed=3)
    cfg = config(jpeg={"min_quality": 40, "max_quality": 60})
    pixels = tf.constant(np.round(image).astype(np.uint8))
    by_quality = {
        q: tf.cast(tf.image.adjust_jpeg_quality(pixels, q), tf.float32).numpy() for q in range(1, 101)
    }
    used = set()
    for seed in SEEDS[:20]:
        out = run(image, seed, cfg)
        matches = [q for q, ref in by_quality.items() if np.array_equal(out, ref)]
        assert matches and any(40 <= q <= 60 for q in matches)
        assert not np.allclose(out, image, atol=2)  # it does degrade the noise
        used.update(q for q in matches if 40 <= q <= 60)
    assert len(used) > 3  # drawn, not fixed
    fixed = run(image, SEEDS[0], config(jpeg={"min_quality": 90, "max_quality": 90}))
    np.testing.assert_array_equal(fixed, by_quality[90])


@pytest.mark.parametrize("name", NAMES)
def test_each_augmentation_changes_images_deterministically_and_keeps_labels(name):
    """Through tf.data, as training runs it: images change, labels pass through untouched."""
    images = np.stack([noise(32, 40, seed=s) for s in range(6)])
    labels = np.array([0, 1, 1, 0, 1, 0], np.int64)
    seeds = np.array([[11, k] for k in range(6)], np.int64)
    augmenter = build_augmenter(config(**{name: None}))

    def pipeline():
        return tf.data.Dataset.from_tensor_slices((images, labels, seeds)).map(
            lambda image, label, seed: (augmenter(image, seed), label), num_parallel_calls=3
        )

    first = list(pipeline())
    second = list(pipeline())
    changed = 0
    for k, ((out, label), (again, label_again)) in enumerate(zip(first, second, strict=True)):
        assert int(label) == labels[k] == int(label_again)
        np.testing.assert_array_equal(out.numpy(), again.numpy())  # same seed, same draw
        changed += not np.allclose(out.numpy(), images[k], atol=1e-3)
    assert changed >= 2  # flip leaves about half as they are; every other one changes all


def test_preview_grid_has_a_column_per_enabled_augmentation(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    from PIL import Image

    from fakeface.stages.preview import write_preview

    rows = []
    for k, label in enumerate(["real", "fake", "real", "fake"]):
        path = tmp_path / f"{label}_{k}.png"
        Image.fromarray(noise(32, 32, seed=k).astype(np.uint8)).save(path)
        rows.append({"path": str(path), "label": label, "split": "train", "width": 32, "height": 32})
    cfg = config(**{name: None for name in NAMES}).model_copy(update={"preview_images": 2})
    shown = write_preview(cfg, 0, pd.DataFrame(rows), tmp_path / "preview.png")
    assert shown["columns"] == ["original", *NAMES, "all enabled"]
    assert (tmp_path / "preview.png").stat().st_size > 0


# --------------------------------------------------------------------------- the registry


def test_every_registered_augmentation_has_its_own_test():
    tests = [name for name in globals() if name.startswith("test_")]
    untested = [name for name in list_augmentations() if not any(t.startswith(f"test_{name}_") for t in tests)]
    assert not untested, f"add a test_<name>_... for {untested}"


def test_every_registered_augmentation_has_an_op():
    OPS.check_complete()
    assert AUGMENTATION_ORDER == tuple(NAMES)  # the constant older callers import


def test_only_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="unknown augmentation 'sepia'.*flip"):
        only(AugmentConfig(), "sepia")


# --------------------------------------------------------------------------- pinned draws
# Recorded from the module as it was before the registry (the if/elif over AUGMENTATION_ORDER).
# A change here means a seed no longer gives the images it gave: an ablation or a rerun would no
# longer compare like with like. Append new augmentations; never edit these.

PINNED_SEEDS = {  # augmentation_seeds([42, 7])
    "flip": (-8829611012219051326, -3685856889256889868),
    "crop": (6322687137949982581, 231909941705266065),
    "zoom": (8257306539084478902, -353196468747163938),
    "rotate": (-6807369826418380309, 1286401930232220766),
    "brightness": (1261451446877514342, 3802994434535302064),
    "contrast": (4817231002550397707, -140074383973553614),
    "stretch": (-7931132679646835136, 2942786409048431939),
    "channel_shift": (-5530045183214778923, 4616126410909029495),
    "sharpness": (-3312695983889661818, -4889349898286049794),
    "blur": (5533719048230914280, 1847791865799286091),
    "downscale": (-4104966604507207176, 4682925485981392546),
    "jpeg": (3411955963314295017, -5634459412985454539),
}

WIDE = {  # wide ranges, so that a different draw shows in the fingerprint
    "crop": {"min_fraction": 0.5}, "zoom": {"max_fraction": 0.4}, "rotate": {"max_degrees": 45},
    "brightness": {"max_delta": 0.3}, "contrast": {"lower": 0.5, "upper": 1.5},
    "stretch": {"max_fraction": 0.4}, "channel_shift": {"max_delta": 0.2},
    "sharpness": {"max_amount": 3.0}, "blur": {"max_sigma": 3.0},
    "downscale": {"min_factor": 0.2}, "jpeg": {"min_quality": 10, "max_quality": 90},
}

# [mean, x-weighted mean, y-weighted mean, R, G, B means] of the 24 x 32 test card, seed [42, 7].
PINNED_FINGERPRINTS = {
    "flip": [127.333, 1.027, 0.659, 125.0, 129.0, 128.0],
    "crop": [129.12, -0.994, 0.593, 126.064, 131.409, 129.887],
    "zoom": [127.346, -1.859, 1.098, 123.281, 129.719, 129.039],
    "rotate": [127.521, -1.278, 1.13, 125.52, 129.46, 127.582],
    "brightness": [167.758, -0.84, 0.549, 165.8, 169.142, 168.326],
    "contrast": [127.392, -0.972, 0.644, 125.621, 128.61, 127.947],
    "stretch": [127.496, -1.609, 0.842, 123.985, 129.507, 128.994],
    "channel_shift": [128.099, -0.881, 0.594, 145.456, 151.045, 87.795],
    "sharpness": [127.4, -0.542, 0.468, 125.81, 128.532, 127.856],
    "blur": [127.333, -1.028, 0.642, 125.0, 129.0, 128.0],
    "downscale": [127.343, -1.041, 0.642, 125.036, 128.964, 128.028],
    "jpeg": [126.276, -0.968, 0.658, 123.612, 129.189, 126.026],
    "all": [169.675, 1.64, -0.402, 181.895, 195.199, 131.931],
}


def _test_card() -> np.ndarray:
    """A fixed, asymmetric 24 x 32 image from a formula (no RNG whose stream could change)."""
    y, x, c = np.mgrid[0:24, 0:32, 0:3]
    return ((x * 37 + y * 91 + c * 53) % 256).astype(np.float32)


def _fingerprint(out: np.ndarray) -> list[float]:
    """Means that move with any change of draw, yet are robust to last-bit float differences
    between CPUs (a checksum of the pixels would not be)."""
    h, w = out.shape[:2]
    wx = np.linspace(-1, 1, w)[None, :, None]
    wy = np.linspace(-1, 1, h)[:, None, None]
    return [float(v) for v in (out.mean(), (out * wx).mean(), (out * wy).mean(), *out.mean(axis=(0, 1)))]


def test_seed_of_each_augmentation_is_pinned():
    seeds = augmentation_seeds(tf.constant([42, 7], tf.int64))
    assert {name: tuple(int(v) for v in seeds[name].numpy()) for name in PINNED_SEEDS} == PINNED_SEEDS


@pytest.mark.parametrize("name", [*PINNED_FINGERPRINTS])
def test_augmented_test_card_is_pinned(name):
    names = list(PINNED_SEEDS) if name == "all" else [name]
    cfg = config(**{n: WIDE.get(n, {}) for n in names})
    with tf.device("/CPU:0"):
        out = run(_test_card(), tf.constant([42, 7], tf.int64), cfg)
    assert _fingerprint(out) == pytest.approx(PINNED_FINGERPRINTS[name], abs=0.02)


def test_all_enabled_is_each_alone_composed_on_the_test_card():
    """Toggling one augmentation never shifts another's draw (the seed is per name, not per slot)."""
    cfg = config(**{n: WIDE.get(n, {}) for n in list_augmentations()})
    seed = tf.constant([42, 7], tf.int64)
    composed = _test_card()
    for name in cfg.enabled():
        composed = run(composed, seed, only(cfg, name))
    np.testing.assert_allclose(run(_test_card(), seed, cfg), composed, atol=1e-3)

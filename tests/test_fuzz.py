"""Property-based fuzzing of what hostile input reaches: the image decode and check path, the zip
reader, and the served model's request parser (hypothesis).

The only outcomes allowed: a scored image or a per-item reason (predict's ``InputError``, ingest's
``Problem`` or quarantine entry, a row with its ``error``, a 4xx answer), never another exception,
a hang (each example has a deadline) or a 5xx. The runs here are bounded and seeded (the ``ci``
profile: derandomized, a few hundred examples, seconds); ``FAKEFACE_FUZZ=long`` runs the ``long``
profile (thousands of examples, random seeds, the example database kept in ``.hypothesis/``).
What the fuzzers found is kept below as ``@example`` regression cases.
"""

from __future__ import annotations

import base64
import io
import json
import os
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from asgi import post
from test_ingest_archives import stored, zip_bytes

settings.register_profile("ci", max_examples=150, derandomize=True, deadline=5000,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=5000, deadline=10000,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("long" if os.environ.get("FAKEFACE_FUZZ") == "long" else "ci")

MAX_PIXELS = 4_000_000
SIZE = 32


def _encoded(fmt: str, width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return out.getvalue()


REAL_FILES = [_encoded(fmt, w, h, k) for k, (fmt, w, h) in enumerate(
    [("JPEG", 40, 30), ("PNG", 33, 17), ("WEBP", 24, 24), ("JPEG", 1, 300), ("PNG", 600, 1), ("GIF", 16, 16),
     ("BMP", 9, 5), ("TIFF", 12, 7)])]


@st.composite
def mangled_images(draw) -> bytes:
    """A real JPEG/PNG/WebP/GIF/BMP/TIFF file, truncated, bit-flipped or spliced, or random bytes."""
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "spliced", "whole"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    data = bytearray(draw(st.sampled_from(REAL_FILES)))
    if kind == "truncated":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "flipped":
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "spliced":
        cut = draw(st.integers(0, len(data)))
        return bytes(data[:cut]) + draw(st.binary(max_size=256)) + bytes(data[cut:])
    return bytes(data)


# --------------------------------------------------------------------------- decode and check


@given(mangled_images())
@example(b"")  # empty
@example(b"\xff\xd8\xff")  # a JPEG that ends after its marker
def test_decoding_any_bytes_gives_an_image_or_a_reason(data):
    from fakeface.inference.predict import InputError, decode_bytes

    try:
        array = decode_bytes(data, SIZE, MAX_PIXELS)
    except InputError as error:
        assert str(error).split(":")[0] in ("empty", "not_an_image", "corrupt", "too_large"), error
        return
    assert array.shape == (SIZE, SIZE, 3) and array.dtype == np.float32
    assert np.isfinite(array).all() and array.min() >= 0 and array.max() <= 255


@given(mangled_images(), st.sampled_from([".jpg", ".png", ".webp", ".gif", ".bmp", ".tif", ".txt"]))
def test_ingest_examines_any_file_to_an_image_or_a_problem(tmp_path_factory, data, suffix):
    from fakeface.data.images import ImageInfo, Problem, inspect_image

    path = tmp_path_factory.mktemp("file") / f"x{suffix}"
    path.write_bytes(data)
    outcome = inspect_image(path, MAX_PIXELS)
    assert isinstance(outcome, (ImageInfo, Problem)), outcome
    if isinstance(outcome, ImageInfo):
        assert outcome.width * outcome.height <= MAX_PIXELS


# --------------------------------------------------------------------------- zip archives


def _zip_of(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members:
            bundle.writestr(name, data)
    return out.getvalue()


@st.composite
def mangled_zips(draw) -> bytes:
    names = st.sampled_from(["real/a.jpg", "fake/b.png", "real/../../c.jpg", "/abs.jpg", "fake/d.zip",
                             "real/e.jpg", "fake/dir/", "fake/f.webp"])
    members = draw(st.lists(st.tuples(names, mangled_images()), max_size=5))
    data = bytearray(_zip_of(members))
    for _ in range(draw(st.integers(0, 6))):
        if data:
            position = draw(st.integers(0, len(data) - 1))
            data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


# Found by the long runs, each a traceback out of the zip reader before its fix: a central
# directory asking for zip version 6.4 (zipfile raised NotImplementedError from its constructor),
# a member whose header offset points past the archive (the seek raised OSError EINVAL), a name
# starting with a NUL byte (zipfile cuts it to "", whose is_dir() raised IndexError), and names
# that clash once cut at a NUL (a file where another member's folder is: IsADirectoryError); and
# (atheris) a name flagged UTF-8 that is not (UnicodeDecodeError from zipfile's constructor).
@given(mangled_zips())
@example(b"PK\x03\x04\x14\x00\x00\x00\x08\x00f\x87\x86]\xe2\x90\xd9\xa8\x08\x00\x00\x00\x06\x00\x00\x00\x10\x00"
         b"\x00\x00real/../../c.jpgc````d\x00\x00PK\x01\x02\x14\x03@\x00\x00\x00\x08\x00f\x87\x86]\xe2\x90\xd9\xa8"
         b"\x08\x00\x00\x00\x06\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01\x00\x00"
         b"\x00\x00real/../../c.jpgPK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00>\x00\x00\x006\x00\x00\x00\x00\x00")
@example(b"PK\x03\x04\x14\x00\x00\x00\x08\x00f\x87\x86]\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\n\x00"
         b"\x00\x00real/a.jpg\x03\x00PK\x01\x02\x14\x03\x14\x00\x00\x00\x08\x00f\x87\x86]\x00\x00\x00\x00\x02\x00"
         b"\x00\x00\x00\x00\x00\x00\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x01\x00\x00\x00\x00real/a.jpg"
         b"PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x008\x00\x00\x00*\x01\x00\x00\x00\x00")
@example(base64.b64decode("ilBLAQJQSwX9/09LBQYAenp6elp6enp6enp6enp6enp6LXp6fVp6rwwAACMAAP/4UEsFBgAAAAoGLy8vLwAAAAAAAAIAAAAK"))
@example(zip_bytes([stored("\x00a.jpg", b"x")]))  # a name that starts with NUL: zipfile makes it empty (is_dir failed)
@example(zip_bytes([stored("real/a.jpg", b"x"), stored("real\x00b.jpg", b"y")]))  # "real", a file where a folder is
@example(zip_bytes([stored("real\x00b.jpg", b"y"), stored("real/a.jpg", b"x")]))  # ... and a folder where a file is
def test_extracting_any_zip_gives_files_or_reasons(tmp_path_factory, archive):
    from fakeface.ingest.archives import extract_zip
    from fakeface.ingest.entries import Entry, IngestError

    folder = tmp_path_factory.mktemp("zip")
    (folder / "in.zip").write_bytes(archive)
    try:
        refused = extract_zip(folder / "in.zip", folder / "out", MAX_PIXELS, 64 << 20)
    except IngestError as error:
        assert "not a readable zip archive" in str(error)
        return
    assert all(isinstance(entry, Entry) and entry.reason for entry in refused)
    written = [p for p in (folder / "out").rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to((folder / "out").resolve()) for p in written)
    assert sum(p.stat().st_size for p in written) <= 64 << 20


# --------------------------------------------------------------------------- the served model's requests


@pytest.fixture(scope="module")
def served_app(tiny_model, tmp_path_factory):
    """``fakeface serve``'s ASGI app (guard, metrics, MLflow's scoring app) over the tiny model."""
    from fakeface.inference.server import build_app, load_served_model
    from fakeface.model.contract import make_contract, write_model_with_contract

    model, _, _ = tiny_model
    folder = tmp_path_factory.mktemp("served")
    detector = write_model_with_contract(model, folder / "detector.keras", make_contract(32, 0.5))
    return build_app(load_served_model(str(detector), folder), 1 << 20)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
cells = (st.builds(lambda data: base64.b64encode(data).decode(), mangled_images())
         | st.text(max_size=64) | json_values)


@st.composite
def requests_bodies(draw) -> bytes:
    shape = draw(st.sampled_from(["split", "records", "inputs", "instances", "v2", "anything", "raw"]))
    rows = draw(st.lists(cells, max_size=6))
    column = draw(st.sampled_from(["image", "image", "img", ""]))
    body = {
        "split": lambda: {"dataframe_split": {"columns": [column], "data": [[cell] for cell in rows]}},
        "records": lambda: {"dataframe_records": [{column: cell} for cell in rows]},
        "inputs": lambda: {"inputs": {column: rows}},
        "instances": lambda: {"instances": [{column: cell} for cell in rows]},
        "v2": lambda: {"inputs": [{"name": column, "datatype": "BYTES", "shape": [len(rows)], "data": rows}]},
        "anything": lambda: draw(json_values),
    }.get(shape)
    if body is None:
        return draw(st.binary(max_size=512))
    return json.dumps(body()).encode()


@given(requests_bodies())
@example(b'{"dataframe_split": {"columns": ["image"], "data": []}}')  # no images
@example(b'{"inputs": {"image": [null]}}')
@example(b"[]")
def test_any_request_gets_rows_or_a_4xx(served_app, body):
    status, answer = post(served_app, body)
    assert status in (200, 400, 413, 415, 422), (status, answer[:300])
    parsed = json.loads(answer, parse_constant=lambda name: pytest.fail(f"{name} in a JSON answer"))
    if status == 200:
        rows = parsed["predictions"]
        assert all(set(row) == {"p_fake", "label", "threshold", "model_name", "model_version", "error"} for row in rows)
        assert all((row["p_fake"] is None) == bool(row["error"]) for row in rows)
    else:
        assert parsed.get("message"), parsed


def test_the_request_limits_are_settings_with_clear_answers(tiny_model, tmp_path):
    from fakeface.inference.served_model import request_body
    from fakeface.inference.server import apply_limits, build_app, load_served_model
    from fakeface.model.contract import make_contract, write_model_with_contract

    model, _, _ = tiny_model
    detector = write_model_with_contract(model, tmp_path / "detector.keras", make_contract(32, 0.5))
    app = build_app(apply_limits(load_served_model(str(detector), tmp_path), max_images=2, max_image_mb=0.001),
                    1 << 20)
    small, large = REAL_FILES[1], REAL_FILES[4]  # a 33 x 17 PNG and a 600 x 1 PNG
    status, answer = post(app, json.dumps(request_body([small] * 3)).encode())
    assert status == 400 and "3 images in one request, at most 2" in json.loads(answer)["message"]
    status, answer = post(app, json.dumps(request_body([large])).encode())
    row = json.loads(answer)["predictions"][0]
    assert status == 200 and row["error"].startswith("too_large") and row["p_fake"] is None
    assert len(large) > 1048  # the limit above is 1,048 bytes

"""Coverage-guided fuzzing (atheris, libFuzzer for Python) of the entry points tests/test_fuzz.py
checks by property: the image decode path, the zip reader and the served model's request parser.

    pip install atheris                       # not a dependency of the project: a tool of this command
    python tests/fuzz_atheris.py decode -atheris_runs=200000
    python tests/fuzz_atheris.py zip -max_total_time=600
    python tests/fuzz_atheris.py request -max_total_time=600   # builds a tiny model first

Allowed outcomes are those of the property tests: an image or a per-item reason, never another
exception (which libFuzzer reports with the input that caused it, saved as crash-<sha1>: add it to
tests/test_fuzz.py as an ``@example``). Not collected by pytest (the name does not start with
``test_``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).parent))  # tests/asgi.py
from asgi import post  # noqa: E402

with atheris.instrument_imports():
    from fakeface.inference.predict import InputError, decode_bytes
    from fakeface.ingest.archives import extract_zip
    from fakeface.ingest.entries import IngestError

MAX_PIXELS = 4_000_000
SCRATCH = Path(tempfile.mkdtemp(prefix="fakeface-fuzz-"))


def decode(data: bytes) -> None:
    try:
        array = decode_bytes(data, 32, MAX_PIXELS)
    except InputError:
        return
    assert array.shape == (32, 32, 3)


def unzip(data: bytes) -> None:
    import shutil

    archive, out = SCRATCH / "in.zip", SCRATCH / "out"
    shutil.rmtree(out, ignore_errors=True)
    archive.write_bytes(data)
    try:
        extract_zip(archive, out, MAX_PIXELS, 64 << 20)
    except IngestError:
        return


def request_target() -> object:
    """A tiny untrained detector behind fakeface serve's app; returns the fuzz target."""
    from fakeface.config import TrainConfig
    from fakeface.inference.server import build_app, load_served_model
    from fakeface.model.classifier import build_classifier
    from fakeface.model.contract import make_contract, write_model_with_contract

    model = build_classifier(TrainConfig(backbone="smallcnn", weights="none", image_size=32)).model
    model.save(SCRATCH / "model.keras")
    detector = write_model_with_contract(SCRATCH / "model.keras", SCRATCH / "detector.keras", make_contract(32, 0.5))
    app = build_app(load_served_model(str(detector), SCRATCH), 1 << 20)

    def request(data: bytes) -> None:
        status, body = post(app, data)
        if status >= 500:
            raise AssertionError(f"{status}: {body[:300]!r}")
        json.loads(body)

    return request


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("decode", "zip", "request"):
        raise SystemExit(__doc__)
    target = {"decode": lambda: decode, "zip": lambda: unzip, "request": request_target}[sys.argv.pop(1)]()
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

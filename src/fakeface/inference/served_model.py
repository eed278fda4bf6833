"""The detector as an MLflow pyfunc model that takes encoded images and returns p(fake).

The registered Keras model (``fakeface-detector``) takes a float tensor at the model's input size,
so every client would have to decode, resize and threshold images itself, and might do it
differently from training. :class:`ImageModel` takes what a client has: the bytes of JPEG, PNG or
WebP files, base64-encoded in a column ``image`` (one or many rows a request), and returns one row
per image::

    p_fake, label, threshold, model_name, model_version, error

``label`` is ``fake`` when ``p_fake >= threshold``, the threshold stored in the detector file (the
one evaluate chose on the valid split); ``model_name``/``model_version`` name the registered Keras
model whose weights scored the image; ``error`` says why an image got no score (not base64, not an
image, corrupt, too large) and never fails the rest of the request.

Every column has one type and no ``None`` (:func:`result_frame`): ``p_fake`` is a float, NaN for an
image without a score; ``label``, ``model_version`` and ``error`` are strings, empty when there is
nothing to say (no score, an unregistered detector, no error). MLServer's pandas codec (KServe's
MLflow runtime, v2 protocol) fails on a column mixing ``None`` with strings; it writes the NaN as
``null``, as ``fakeface serve`` does (MLflow's own scoring server writes it ``NaN``).

Decoding and resizing are :func:`fakeface.inference.predict.decode_bytes`, the same code ``fakeface
predict`` runs on a file, so a served score is predict's score for the same file.

The register stage logs it beside the Keras model, in the same run, as ``serving``, and registers it
as ``<register.model_name>-serving`` (:func:`serving_model_name`) with the same alias, so
``mlflow models serve -m models:/fakeface-detector-serving@champion --env-manager local`` answers
image requests, and ``mlflow.keras.load_model("models:/fakeface-detector@champion")`` still gives
the Keras model. The pyfunc carries the detector file (an artifact: weights and contract in one
file) and this package's source (``code_paths``), so it loads where fakeface is not installed (a
KServe MLServer image with TensorFlow and MLflow).

A request that cannot be answered at all (no ``image`` column, no rows, too many rows) raises
:class:`mlflow.exceptions.MlflowException` with ``INVALID_PARAMETER_VALUE``: MLflow's scoring
server turns it into an HTTP 400 whose message says what to send.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import math
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException

from fakeface.tracking.aliases import DETECTOR_VERSION_TAG, serving_model_name

log = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
OUTPUT_COLUMNS = ("p_fake", "label", "threshold", "model_name", "model_version", "error")
#: Rows one request may hold (each decoded image is size x size x 3 float32 while it is scored).
MAX_IMAGES = 64
#: Encoded bytes of one image (a 1024 px face JPEG is about 0.3 MB).
MAX_IMAGE_BYTES = 8 * 1024 * 1024
#: Images per model call.
SCORE_BATCH = 32
#: The artifact name of the detector file inside the pyfunc model.
DETECTOR_ARTIFACT = "detector"
REQUEST_HELP = (
    'send JSON {"dataframe_split": {"columns": ["image"], "data": [["<base64 of a JPEG, PNG or WebP file>"], ...]}} '
    '(or {"inputs": {"image": ["<base64>", ...]}}; v2 protocol: {"inputs": [{"name": "image", "datatype": "BYTES", '
    '"shape": [n], "data": ["<base64>", ...]}]}) with Content-Type: application/json, '
    f"1 to {MAX_IMAGES} images a request"
)


#: Bytes that are base64 text, not an image file (every image format starts with bytes outside it).
BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+|data:[-\w./+]+;base64,[A-Za-z0-9+/=\s]*")


def request_body(images: Iterable[bytes]) -> dict[str, Any]:
    """The JSON body that scores ``images`` (encoded files' bytes), in MLflow's ``dataframe_split``."""
    return {"dataframe_split": {"columns": [IMAGE_COLUMN],
                                "data": [[base64.b64encode(data).decode("ascii")] for data in images]}}


def _bad_request(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(f"{message}: {REQUEST_HELP}")


def image_bytes(value: Any, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """One ``image`` cell to the encoded file's bytes: base64 text (line breaks and a
    ``data:image/...;base64,`` prefix allowed), or bytes: the file's own, or base64 text as bytes
    (as a v2-protocol server such as MLServer may hand over a BYTES input)."""
    from fakeface.inference.predict import InputError

    if isinstance(value, (bytes, bytearray)) and BASE64_TEXT.fullmatch(bytes(value[:256])):
        value = bytes(value).decode("ascii")
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("data:"):
            text = text.partition(",")[2]
        if len(text) > 2 * max_bytes:  # far too long: not worth decoding
            raise InputError(f"too_large: about {len(text) * 3 // 4:,} bytes; at most {max_bytes:,} per image")
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError) as error:
            raise InputError(f"not_base64: {error}") from None
    else:
        raise InputError(f"not_base64: expected a base64 string, got {type(value).__name__}")
    if len(data) > max_bytes:
        raise InputError(f"too_large: {len(data):,} bytes; at most {max_bytes:,} per image")
    return data


def _cells(model_input: Any) -> list[Any]:
    """The ``image`` values of what MLflow hands ``predict`` (a DataFrame after its schema
    enforcement; a dict or a list from a Python caller)."""
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise _bad_request(f"no {IMAGE_COLUMN!r} column (got {list(model_input.columns)[:5]})")
        return model_input[IMAGE_COLUMN].tolist()
    if isinstance(model_input, dict):
        if IMAGE_COLUMN not in model_input:
            raise _bad_request(f"no {IMAGE_COLUMN!r} field (got {list(model_input)[:5]})")
        values = model_input[IMAGE_COLUMN]
        return [values] if isinstance(values, (str, bytes)) else list(values)
    if isinstance(model_input, (list, tuple)):
        return list(model_input)
    raise _bad_request(f"cannot read images from a {type(model_input).__name__}")


class ImageModel(mlflow.pyfunc.PythonModel):
    """Encoded images in, p(fake) and the label at the stored threshold out (one row each)."""

    def load_context(self, context: Any) -> None:
        import numpy as np

        from fakeface.inference.predict import load_model

        config = dict(context.model_config or {})
        self.loaded = load_model(context.artifacts[DETECTOR_ARTIFACT])
        self.model_name = str(config.get("model_name") or "")
        self.model_version = "" if config.get("model_version") is None else str(config["model_version"])
        self.max_pixels = int(config.get("max_pixels", 40_000_000))
        self.max_images = int(config.get("max_images", MAX_IMAGES))
        self.max_image_bytes = int(config.get("max_image_bytes", MAX_IMAGE_BYTES))
        # One model call at a time (the scoring server runs requests in threads; decoding runs in
        # parallel, TensorFlow uses every core for one call anyway).
        self.lock = threading.Lock()
        # Callables given one record per image of each request (fakeface serve's metrics and
        # prediction log, fakeface.inference.observe); none by default, so nothing is hashed.
        self.observers: list[Any] = []
        size = self.loaded.image_size
        self.loaded.model.predict_on_batch(np.zeros((1, size, size, 3), "float32"))  # trace before the first request

    # A DataFrame hint: MLflow takes it as "no schema from hints" and keeps the signature given (a
    # list[...] hint would become the schema and make every request {"inputs": ...}).
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            cells = _cells(model_input)
            if not cells:
                raise _bad_request("no images")
            if len(cells) > self.max_images:
                raise _bad_request(f"{len(cells)} images in one request, at most {self.max_images}")
            return self.score(cells)
        except MlflowException:
            raise
        except Exception as error:  # a fault of the server, never a traceback in the answer
            log.exception("scoring failed")
            raise MlflowException(f"scoring failed: {type(error).__name__}: {error}") from None

    def score(self, cells: Sequence[Any]) -> pd.DataFrame:
        import numpy as np

        from fakeface import CLASS_NAMES
        from fakeface.model.classifier import probabilities_of_fake
        from fakeface.inference.predict import InputError, decode_bytes

        threshold = self.loaded.threshold
        p_fake = [math.nan] * len(cells)
        labels, errors = [""] * len(cells), [""] * len(cells)
        arrays, members = [], []
        digests: list[tuple[str, int]] = [("", 0)] * len(cells)
        for index, cell in enumerate(cells):
            try:
                data = image_bytes(cell, self.max_image_bytes)
                if self.observers:  # what the prediction log keeps; hashed only when one is kept
                    digest = hashlib.sha256(data).hexdigest() if any(o.wants_digest for o in self.observers) else ""
                    digests[index] = (digest, len(data))
                arrays.append(decode_bytes(data, self.loaded.image_size, self.max_pixels))
                members.append(index)
            except InputError as error:
                errors[index] = str(error)
            except Exception as error:  # anything else about one image must not fail the others
                errors[index] = f"unexpected: {type(error).__name__}: {error}"
        for start in range(0, len(arrays), SCORE_BATCH):
            batch = np.stack(arrays[start : start + SCORE_BATCH])
            with self.lock:
                scores = probabilities_of_fake(self.loaded.model.predict_on_batch(batch))
            for index, score in zip(members[start : start + SCORE_BATCH], scores):
                p_fake[index] = float(score)
                labels[index] = CLASS_NAMES[int(score >= threshold)]
        if self.observers:
            records = [{"model_name": self.model_name, "model_version": self.model_version,
                        "p_fake": None if math.isnan(p) else p, "label": label, "error": error.split(":")[0],
                        "sha256": digest, "bytes": size}
                       for p, label, error, (digest, size) in zip(p_fake, labels, errors, digests)]
            for observer in self.observers:
                observer(records)
        return result_frame(p_fake, labels, threshold, self.model_name, self.model_version, errors)


def result_frame(p_fake: Sequence[float], labels: Sequence[str], threshold: float, model_name: str,
                 model_version: str, errors: Sequence[str]) -> pd.DataFrame:
    """The answer, one row an image: ``p_fake`` float64 (NaN: no score), every other column a
    plain string (``""``: none), so that every encoder of a DataFrame (MLflow's JSON, MLServer's v2
    pandas codec) can write it."""
    import numpy as np

    n = len(p_fake)
    return pd.DataFrame({
        "p_fake": np.asarray(p_fake, dtype="float64"),
        "label": pd.Series(list(labels), dtype=object),
        "threshold": np.full(n, float(threshold), dtype="float64"),
        "model_name": pd.Series([model_name] * n, dtype=object),
        "model_version": pd.Series([model_version] * n, dtype=object),
        "error": pd.Series(list(errors), dtype=object),
    }, columns=list(OUTPUT_COLUMNS))


# --------------------------------------------------------------------------- logging the model


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    # p_fake is NaN without a score; the strings are always there (empty: nothing to say)
    outputs = Schema([
        ColSpec("double", "p_fake", required=False), ColSpec("string", "label"), ColSpec("double", "threshold"),
        ColSpec("string", "model_name"), ColSpec("string", "model_version"), ColSpec("string", "error"),
    ])
    return ModelSignature(inputs=Schema([ColSpec("string", IMAGE_COLUMN)]), outputs=outputs)


def example_image() -> bytes:
    """A small grey JPEG: the logged model's input example (MLflow scores it once to check it)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), (128, 128, 128)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


#: The distributions whose modules the model's code (its bundled fakeface source) imports when it
#: loads and scores: what the model's ``requirements.txt`` lists, each pinned to this environment.
#: Everything else comes with them (their own dependencies). ``tests/test_mlserver.py`` derives
#: the list from a real load and predict (every import statement fakeface's modules run) and
#: requires it to be exactly this, then builds a virtualenv from the requirements alone and serves
#: the model from it with MLServer.
SERVING_PACKAGES = ("mlflow", "tensorflow", "keras", "pillow", "numpy", "pandas", "pydantic", "pyyaml")


def pip_requirements() -> list[str]:
    """What the model needs besides its bundled fakeface source, pinned to this environment."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in SERVING_PACKAGES]


#: The model's code, as MLflow's "models from code" wants it (a script, not a pickled object).
MODEL_SCRIPT = "import mlflow\n\nfrom fakeface.inference.served_model import ImageModel\n\nmlflow.models.set_model(ImageModel())\n"


def model_arguments(detector: Path, script: Path, contract: dict[str, Any], model_name: str | None,
                    model_version: str | None, max_pixels: int = 40_000_000) -> dict[str, Any]:
    """``mlflow.pyfunc.save_model``/``log_model`` arguments for the detector file ``detector``;
    ``script`` is where :data:`MODEL_SCRIPT` is written."""
    script.write_text(MODEL_SCRIPT)
    return {
        "python_model": str(script),
        "artifacts": {DETECTOR_ARTIFACT: str(detector)},
        "model_config": {"model_name": model_name, "model_version": model_version, "max_pixels": max_pixels,
                         "max_images": MAX_IMAGES, "max_image_bytes": MAX_IMAGE_BYTES},
        "signature": signature(),
        "input_example": pd.DataFrame({IMAGE_COLUMN: [base64.b64encode(example_image()).decode("ascii")]}),
        "metadata": {"fakeface": contract},
        "code_paths": [str(Path(__file__).resolve().parents[1])],  # the whole fakeface package
        "pip_requirements": pip_requirements(),
    }


def _with_contract(detector: Path, contract: dict[str, Any], folder: Path) -> Path:
    """``detector`` if it carries ``contract``, else a copy in ``folder`` that does (the served
    model reads its threshold from the file)."""
    from fakeface.model.contract import read_contract, write_model_with_contract

    if read_contract(detector) == contract:
        return detector
    return write_model_with_contract(detector, folder / "detector.keras", contract)


def log_serving_model(detector: str | Path, contract: dict[str, Any], *, registered_model_name: str | None,
                      model_name: str, model_version: str | None, max_pixels: int = 40_000_000) -> Any:
    """Log the image-in model (``name="serving"``) to the active run; register it as
    ``registered_model_name`` when given. Returns MLflow's ``ModelInfo``."""
    with tempfile.TemporaryDirectory(prefix="fakeface-serving-") as folder:
        path = _with_contract(Path(detector), contract, Path(folder))
        return mlflow.pyfunc.log_model(
            name="serving", registered_model_name=registered_model_name,
            **model_arguments(path, Path(folder) / "image_model.py", contract, model_name, model_version, max_pixels),
        )


def register_serving(detector: str | Path, contract: dict[str, Any], model_name: str, version: str | None,
                     max_pixels: int = 40_000_000) -> str:
    """Log the image-in model of the Keras model ``model_name`` to the active run and, when that
    model was registered (``version``), register it as :func:`serving_model_name`, tagged with the
    detector version it wraps (aliases follow the detector's: :mod:`fakeface.tracking.aliases`).
    Returns its URI."""
    from mlflow.tracking import MlflowClient

    name = serving_model_name(model_name)
    info = log_serving_model(detector, contract, registered_model_name=name if version else None,
                             model_name=model_name, model_version=version, max_pixels=max_pixels)
    if version is None:
        return info.model_uri
    serving_version = str(info.registered_model_version)
    MlflowClient().set_model_version_tag(name, serving_version, DETECTOR_VERSION_TAG, str(version))
    log.info("registered %s version %s (the image-in model of %s v%s)", name, serving_version, model_name, version)
    return f"models:/{name}/{serving_version}"


def save_serving_model(detector: str | Path, out_dir: str | Path, max_pixels: int = 40_000_000) -> Path:
    """The image-in model of a local detector file, saved as an MLflow model folder ``out_dir``
    (what ``fakeface serve --model models/detector.keras`` serves)."""
    from fakeface import FakefaceError
    from fakeface.model.contract import read_contract

    detector = Path(detector)
    contract = read_contract(detector)
    if contract is None:
        raise FakefaceError(f"{detector} carries no contract (no threshold): serve the detector evaluate wrote "
                            "(models/detector.keras) or a registered model")
    with tempfile.TemporaryDirectory(prefix="fakeface-serving-") as folder:
        arguments = model_arguments(detector, Path(folder) / "image_model.py", contract, detector.name, None, max_pixels)
        mlflow.pyfunc.save_model(str(out_dir), **arguments)
    return Path(out_dir)

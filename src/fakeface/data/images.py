"""Per-file image checks and normalisation, used by the ingest stage.

:func:`inspect_image` looks at one file and says either what it is (:class:`ImageInfo`: size,
format, mode) or why it cannot be used (:class:`Problem`, with one of the quarantine reasons in
:data:`IMAGE_REASONS`). It decodes the whole image once (to catch truncated or corrupt files) and
keeps nothing of the pixels. :func:`normalize_image` turns a kept image that is not an RGB JPEG
into a lossless RGB PNG.

PIL's process-wide switches (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``) are
set by the :func:`pil_limits` context manager, once around a whole run (they are globals, so
setting them per call from several threads would race). :func:`inspect_image` does not depend on
them for the size check: it compares width x height with ``max_pixels`` from the header itself,
before any decoding, and maps PIL's own ``DecompressionBombError`` to ``too_large``.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from fakeface.data.atomic import replaced

#: File name extensions we try to decode. Any other file is quarantined as ``not_an_image``
#: without being opened (a ``.txt`` that happens to hold JPEG bytes is still not a data set image).
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
        ".ppm", ".pgm", ".pbm", ".pnm",
    }
)

#: PIL formats that are JPEG bitstreams (MPO: a JPEG with extra frames, as some cameras write).
JPEG_FORMATS = frozenset({"JPEG", "MPO"})

#: Quarantine reasons that a single file can earn on its own.
IMAGE_REASONS = ("empty", "not_an_image", "corrupt", "too_large", "unreadable")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What a decodable image is, from its header (no pixels kept)."""

    width: int
    height: int
    format: str  # as PIL names it: JPEG, PNG, ...
    mode: str  # RGB, L, CMYK, RGBA, P, I;16 ...

    @property
    def is_rgb_jpeg(self) -> bool:
        return self.format in JPEG_FORMATS and self.mode == "RGB"

    @property
    def needs_normalization(self) -> bool:
        """Everything but an RGB JPEG is rewritten as an RGB PNG (an RGB JPEG is never re-encoded)."""
        return not self.is_rgb_jpeg

    @property
    def note(self) -> str:
        """What normalisation does to this image, for the manifest ``note`` column ('' if nothing)."""
        if not self.needs_normalization:
            return ""
        return f"converted {self.format}/{self.mode} to PNG/RGB"

    @property
    def final_format(self) -> str:
        return "PNG" if self.needs_normalization else "JPEG"


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a file cannot be used: a quarantine ``reason`` and a human-readable ``detail``."""

    reason: str
    detail: str


@contextmanager
def pil_limits(max_pixels: int) -> Iterator[None]:
    """Set PIL's decompression-bomb limit and strict decoding for the duration, then restore.

    Inside, ``Image.open`` raises ``DecompressionBombError`` above ``2 * max_pixels`` (before
    allocating anything), truncated files fail to load instead of being padded with grey, and the
    ``DecompressionBombWarning`` between ``max_pixels`` and ``2 * max_pixels`` is silenced (those
    images are quarantined as ``too_large`` by the header check anyway). Not re-entrant across
    threads: enter it once, in the thread that starts the workers.
    """
    saved_pixels = Image.MAX_IMAGE_PIXELS
    saved_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = saved_truncated


def _error_text(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def _bomb_detail(error: Exception, max_pixels: int) -> str:
    return f"decompression bomb guard: {error} (max_pixels {max_pixels})"


def inspect_image(path: str | Path, max_pixels: int) -> ImageInfo | Problem:
    """Check one file: its size, extension, header, pixel count and a full decode.

    Returns :class:`ImageInfo` for a usable image, otherwise a :class:`Problem` whose reason is
    ``unreadable`` (cannot stat or open), ``empty`` (zero bytes), ``not_an_image`` (not an image
    extension, or content PIL cannot identify), ``too_large`` (width x height above
    ``max_pixels``, checked from the header before decoding) or ``corrupt`` (header identified but
    the decode fails, e.g. a truncated JPEG). Decoded pixels are dropped before returning.
    """
    path = Path(path)
    try:
        status = os.stat(path)
    except OSError as error:
        return Problem("unreadable", f"cannot stat: {_error_text(error)}")
    if not stat.S_ISREG(status.st_mode):
        return Problem("unreadable", "not a regular file")
    if status.st_size == 0:
        return Problem("empty", "zero bytes")
    extension = path.suffix.lower()
    if extension not in IMAGE_EXTENSIONS:
        shown = extension or "(none)"
        return Problem("not_an_image", f"extension {shown} is not an image type")
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; open separately from PIL on purpose
    except OSError as error:
        return Problem("unreadable", f"cannot open: {_error_text(error)}")
    with handle:
        return inspect_stream(handle, max_pixels, not_image=f"content is not a recognised image (extension {extension})")


def inspect_stream(handle: Any, max_pixels: int, formats: tuple[str, ...] | None = None,
                   not_image: str = "content is not a recognised image") -> ImageInfo | Problem:
    """The content checks of :func:`inspect_image` on an open binary stream (a file, or the bytes
    of a request): the header, the pixel count from the header before decoding, a full decode.
    ``formats`` limits what PIL may identify it as; ``not_image`` is the detail when it is none."""
    try:
        image = Image.open(handle, formats=formats)
    except Image.DecompressionBombError as error:
        return Problem("too_large", _bomb_detail(error, max_pixels))
    except UnidentifiedImageError:
        return Problem("not_an_image", not_image)
    except Exception as error:  # PIL raises many types for a malformed header
        return Problem("corrupt", f"bad header: {_error_text(error)}")
    with image:
        width, height = image.size
        image_format = "JPEG" if image.format in JPEG_FORMATS else str(image.format)
        info = ImageInfo(width, height, image_format, image.mode)
        if width <= 0 or height <= 0:
            return Problem("corrupt", f"header says {width}x{height} pixels")
        if width * height > max_pixels:
            return Problem(
                "too_large", f"{width}x{height} = {width * height} pixels > max_pixels {max_pixels}"
            )
        try:
            image.load()
        except Image.DecompressionBombError as error:
            return Problem("too_large", _bomb_detail(error, max_pixels))
        except MemoryError:
            return Problem("too_large", f"{width}x{height}: out of memory while decoding")
        except Exception as error:  # truncated data, bad Huffman tables, zlib errors ...
            return Problem("corrupt", f"decode failed: {_error_text(error)}")
    return info


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (16-bit and 32-bit grey are scaled, not clipped)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image)
        if mode.startswith("I;16"):
            array8 = (array.astype(np.uint32) >> 8).astype(np.uint8)
        elif mode == "I" and array.max(initial=0) > 255:
            array8 = (np.clip(array, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        else:
            array8 = np.clip(array, 0, 255).astype(np.uint8)
        return Image.fromarray(array8, mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").convert("RGB")
    # CMYK (PIL undoes Adobe's inverted CMYK while decoding), L, LA, RGBA, 1, YCbCr, LAB, ...
    return image.convert("RGB")


def normalize_image(source: str | Path, destination: str | Path) -> Problem | None:
    """Decode ``source`` and write it as a lossless RGB PNG at ``destination`` (atomically).

    Call it inside :func:`pil_limits`, for images :func:`inspect_image` accepted. Alpha is dropped
    (not composited), 16-bit grey is scaled to 8 bits, the first frame of an animation is used.
    Returns a :class:`Problem` (reason ``corrupt``) if the file no longer decodes, else None.
    """
    try:
        with replaced(destination) as temporary, Image.open(source) as image:
            image.load()
            # zlib level 3: ~6x faster than PIL's default 6 on photos, files ~1% larger; lossless
            to_rgb(image).save(temporary, format="PNG", compress_level=3)
    except Exception as error:  # the file changed since inspection, or a decoder error
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # a full disk says nothing about this image: the stage stops with a clear error
        return Problem("corrupt", f"normalisation failed: {_error_text(error)}")
    return None

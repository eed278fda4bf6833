"""Zip sources: extraction that an archive from the internet cannot turn against the machine.

An archive decides the names, the sizes and the content of what it unpacks, so each of them is a
way in: a member called ``../../x`` (zip slip), a link, an archive inside the archive, or a few
megabytes that inflate to gigabytes of zeros (an archive bomb) that fill the disk before anything
looks at them. :func:`extract_zip` refuses each of these *before or while* writing, never after:

* names that would land outside the extraction folder, and symbolic links: ``zip_slip``;
* members that are archives themselves (``.zip``, ``.tar``, ``.gz``, ``.7z`` ...): ``nested_archive``,
  not extracted (ingest never unpacks an archive inside an archive);
* sizes: no image of at most ``data.max_pixels`` pixels needs more than :func:`member_limit` bytes
  (:data:`BYTES_PER_PIXEL` per pixel, the raw size of a 4-channel 16-bit image, plus
  :data:`METADATA_ALLOWANCE` for EXIF, ICC and XMP), and the archive as a whole may not write more
  than ``data.max_archive_bytes``. A member that *declares* more is ``too_large`` without a byte
  written; a member is then streamed with that cap and cut off the moment its output passes it,
  whatever its header says (a forged size field is exactly what a bomb would use), its partial
  file removed: ``too_large`` again, with the sizes in the detail. A member whose output
  disagrees with its declared size is ``corrupt``;
* the compression ratio: image files barely compress (JPEG, PNG and WebP are compressed already:
  about 1:1 in a zip; an uncompressed BMP, TIFF or PPM photo a few to one), while a bomb is a
  long run of one byte (zeros deflate about 1,000:1). Past :data:`RATIO_ALLOWANCE` (4 MiB) a
  member may unpack to at most :data:`MAX_RATIO` (200) times its compressed size
  (:func:`ratio_limit`): one that declares more is ``too_large`` before a byte is written, one
  that lies is cut off there while streaming. So 205 members of 20 MiB of zeros named
  ``fake/pad_NNN.jpg`` in a 4.4 MiB zip write nothing, where the size caps alone (each member under
  the per-image limit, the sum under the archive's) let them write 4 GiB before any check saw them.
  A member that unpacks to more than it declares is cut off one byte past its declared size.

Every refused member is an :class:`~fakeface.ingest.entries.Entry` of the source, so the stage's
``seen == kept + quarantined`` still holds. Before writing, the sum of the sizes to extract is
checked against the free space of the disk, so a large honest archive fails at once with "disk
full" instead of filling the disk first.
"""

from __future__ import annotations

import copy
import errno
import logging
import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from fakeface.ingest.entries import Entry, IngestError
from fakeface.logs import progress

logger = logging.getLogger(__name__)

#: Raw bytes per pixel of the largest uncompressed layout an image can have: 4 channels x 16 bits.
#: Compressed formats (JPEG, PNG, WebP) need far less; uncompressed TIFF/BMP/PPM at most this.
BYTES_PER_PIXEL = 8
#: Room for what an image file holds besides pixels: EXIF, ICC profiles, XMP, thumbnails.
METADATA_ALLOWANCE = 4 << 20
#: The most bytes a member may unpack to per compressed byte, past :data:`RATIO_ALLOWANCE`.
MAX_RATIO = 200
#: What any member may unpack to whatever its ratio (a small flat-colour BMP deflates far better
#: than 200:1 and is still an image).
RATIO_ALLOWANCE = 4 << 20
#: Bytes copied per read while streaming a member (also the most memory extraction holds).
CHUNK = 1 << 20
#: Suffixes of archive and compressed-stream formats: such members are never extracted.
NESTED_ARCHIVE_SUFFIXES = frozenset(
    ".zip .tar .tgz .gz .bz2 .tbz .tbz2 .xz .txz .lz .lzma .lz4 .zst .tzst .z .7z .rar .cab .jar".split()
)


def member_limit(max_pixels: int) -> int:
    """The most bytes any one member may unpack to: an uncompressed 4-channel 16-bit image of
    ``max_pixels`` pixels plus :data:`METADATA_ALLOWANCE` (324 MB, 309 MiB, at the default 40 MP)."""
    return BYTES_PER_PIXEL * max_pixels + METADATA_ALLOWANCE


def ratio_limit(compressed: int) -> int:
    """The most bytes a member of ``compressed`` bytes may unpack to (see the module doc)."""
    return max(RATIO_ALLOWANCE, MAX_RATIO * compressed)


def unsafe_member(name: str) -> str | None:
    """Why a zip member name would escape the extraction folder, or None if it is safe."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "path with '..'"
    if "\x00" in posix:
        return "NUL byte in name"
    return None


def copy_capped(reader: BinaryIO, destination: Path, cap: int) -> int | None:
    """Stream ``reader`` into ``destination``; the bytes written, or None when the stream held more
    than ``cap`` bytes: then writing stopped before the chunk that would pass the cap, and the
    partial file is removed. At most ``cap`` bytes ever reach the disk."""
    written = 0
    try:
        with open(destination, "wb") as writer:
            while chunk := reader.read(CHUNK):
                if written + len(chunk) > cap:
                    break
                writer.write(chunk)
                written += len(chunk)
            else:
                return written
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    destination.unlink(missing_ok=True)
    return None


def _size(n: int) -> str:
    return f"{n:,} bytes"


class _Plan:
    """What to do with each member, decided from the central directory before anything is written."""

    def __init__(self, archive: Path, target: Path, max_pixels: int, max_total: int) -> None:
        self.archive, self.target = archive, target
        self.per_member, self.max_total = member_limit(max_pixels), max_total
        self.max_pixels = max_pixels
        self.target_real = target.resolve()
        self.refused: list[Entry] = []
        self.extract: list[tuple[zipfile.ZipInfo, Path]] = []
        self.declared = 0  # bytes the members to extract declare, in total

    def label(self, member: zipfile.ZipInfo) -> str:
        return f"{self.archive}::{member.filename}"

    def refuse(self, member: zipfile.ZipInfo, reason: str, detail: str) -> None:
        self.refused.append(Entry(self.label(member), self.label(member), reason=reason, detail=detail))

    def add(self, member: zipfile.ZipInfo) -> None:
        if not member.filename:  # zipfile cuts a name at its first NUL byte: one that starts with it is empty
            self.refuse(member, "corrupt", "a member without a name (it starts with a NUL byte); not extracted")
            return
        why = unsafe_member(member.filename)
        if why is None and stat.S_ISLNK(member.external_attr >> 16):
            why = "symbolic link member"
        destination = self.target / member.filename.replace("\\", "/")
        if why is None and not destination.resolve().is_relative_to(self.target_real):
            why = "resolves outside the extraction folder"
        if why is not None:
            if member.is_dir():
                logger.warning("ingest: zip member %s refused (%s)", self.label(member), why)
            else:
                self.refuse(member, "zip_slip", f"{why}; not extracted")
            return
        if member.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            return
        suffix = PurePosixPath(member.filename).suffix.lower()
        if suffix in NESTED_ARCHIVE_SUFFIXES:
            self.refuse(member, "nested_archive", f"an archive inside the archive ({suffix}); not extracted")
            return
        if member.file_size > self.per_member:
            self.refuse(member, "too_large", f"declares {_size(member.file_size)} uncompressed "
                        f"({_size(member.compress_size)} compressed), more than any image of "
                        f"data.max_pixels={self.max_pixels:,} needs ({_size(self.per_member)}); not extracted")
            return
        if member.file_size > ratio_limit(member.compress_size):
            self.refuse(member, "too_large", f"declares {_size(member.file_size)} uncompressed from "
                        f"{_size(member.compress_size)} compressed, a ratio of "
                        f"{member.file_size / max(member.compress_size, 1):,.0f}:1; image files do not "
                        f"compress past {MAX_RATIO}:1 (beyond the first {_size(RATIO_ALLOWANCE)}); not extracted")
            return
        if self.declared + member.file_size > self.max_total:
            self.refuse(member, "too_large", f"declares {_size(member.file_size)}; with the "
                        f"{_size(self.declared)} before it the archive would pass "
                        f"data.max_archive_bytes={self.max_total:,}; not extracted")
            return
        self.declared += member.file_size
        self.extract.append((member, destination))


def _check_free_space(plan: _Plan) -> None:
    """Fail before writing when the disk cannot hold what the archive declares (an honest large
    archive); a lying one is still stopped by the caps and by ENOSPC while writing."""
    free = shutil.disk_usage(plan.target).free
    if plan.declared > free:
        raise OSError(
            errno.ENOSPC,
            f"{plan.archive} declares {_size(plan.declared)} to extract and only {_size(free)} "
            "are free on that disk",
        )


def _extract_member(bundle: zipfile.ZipFile, plan: _Plan, member: zipfile.ZipInfo, destination: Path,
                    written_total: int) -> int | Entry:
    """Extract one member with its cap: the bytes written, or the quarantine entry."""
    label = plan.label(member)
    by_ratio = ratio_limit(member.compress_size)
    # One byte past what the member declares is already a lie: a forged size field is what a bomb
    # uses, so it is cut there rather than at the larger caps (its partial file removed).
    cap = min(plan.per_member, plan.max_total - written_total, by_ratio, member.file_size + 1)
    # zipfile stops a member at its declared size (and then fails its CRC); a copy of its header
    # declaring more than the cap plus one read makes our cap, not the header, decide where a
    # lying member is cut off.
    probe = copy.copy(member)
    probe.file_size = cap + CHUNK + 1
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder of that name came from another member", str(destination))
        with bundle.open(probe) as reader:
            written = copy_capped(reader, destination, cap)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, zlib.error, OSError) as error:
        # a bad CRC, an encrypted or unsupported member, a header pointing outside the archive
        # (the seek fails with EINVAL): that file, not the whole archive. A full disk is not the
        # member's fault: it stops the stage.
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        if destination.is_file():  # (a name clashing with another member's folder is no file of ours)
            destination.unlink()
        detail = f"cannot extract: {type(error).__name__}: {error}"
        return Entry(label, label, reason="corrupt", detail=detail)
    if written is None:
        which = ("its own header (a forged size)" if cap == member.file_size + 1
                 else "an image of data.max_pixels" if cap == plan.per_member
                 else f"a compression ratio of {MAX_RATIO}:1" if cap == by_ratio
                 else f"data.max_archive_bytes={plan.max_total:,} ({_size(written_total)} written before it)")
        detail = (f"unpacks to more than {_size(cap)}, the most {which} allows (it declares "
                  f"{_size(member.file_size)}, {_size(member.compress_size)} compressed); "
                  f"cut off at {_size(cap)} and removed")
        return Entry(label, label, reason="too_large", detail=detail)
    if written != member.file_size:
        destination.unlink()
        detail = f"holds {_size(written)} but declares {_size(member.file_size)}; not kept"
        return Entry(label, label, reason="corrupt", detail=detail)
    return written


def extract_zip(archive: Path, target: Path, max_pixels: int, max_total: int) -> list[Entry]:
    """Extract ``archive`` into the new folder ``target``; returns the refused members.

    Raises :class:`IngestError` for an archive that cannot be read at all, and ``OSError``
    (``ENOSPC``) when the disk lacks the room the archive declares.
    """
    target.mkdir(parents=True)
    plan = _Plan(archive, target, max_pixels, max_total)
    written_total = extracted = 0
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError) as error:
        # what zipfile raises reading a broken central directory: a bad signature, a zip version
        # it does not read, a name flagged UTF-8 that is not (UnicodeDecodeError), a bad offset
        raise IngestError(f"{archive}: not a readable zip archive ({type(error).__name__}: {error})") from None
    try:
        with bundle:
            for member in bundle.infolist():
                plan.add(member)
            _check_free_space(plan)
            bar = progress(plan.extract, desc="ingest: extract", total=len(plan.extract), unit="file")
            for member, destination in bar:
                outcome = _extract_member(bundle, plan, member, destination, written_total)
                if isinstance(outcome, Entry):
                    plan.refused.append(outcome)
                else:
                    written_total += outcome
                    extracted += 1
    except zipfile.BadZipFile as error:
        raise IngestError(f"{archive}: not a readable zip archive ({error})") from error
    logger.info(
        "ingest: extracted %d files (%s) from %s into %s (%d refused)",
        extracted, _size(written_total), archive, target, len(plan.refused),
    )
    return plan.refused

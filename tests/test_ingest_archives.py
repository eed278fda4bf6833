"""Archive bombs and nested archives: a .zip source cannot fill the disk, and every refused member
is in the report (seen = kept + quarantined).

The bomb is built the way a real one is: one member ``fake/huge.jpg`` of 3 GiB of zeros, deflated
to about 3 MiB (the issue's case). Deflating 3 GiB would take seconds, so the compressed stream is
assembled from one full-flushed deflate block of 1 MiB of zeros repeated (byte-identical to what
zlib would write block by block); only the CRC runs over the whole length (about 1 s). The bytes
written while ingesting are measured with the process's ``wchar`` counter (every ``write()``
call, to any file: an upper bound on what reached the disk).
"""

from __future__ import annotations

import io
import os
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from fakeface.config import DataConfig
from fakeface.ingest import IngestReport, ingest
from fakeface.ingest.archives import copy_capped, member_limit
from ingest_data import build_plain

GiB = 1 << 30
MiB = 1 << 20
BOMB_NAME = "fake/huge.jpg"
BOMB_SIZE = 3 * GiB


def deflated_zeros(size: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``size`` zero bytes (a multiple of 1 MiB) and its CRC-32."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert block == again  # a full flush resets the state: each MiB deflates to the same bytes
    stream = block * (size // MiB) + compressor.flush(zlib.Z_FINISH)
    crc, zeros = 0, bytes(64 * MiB)
    for _ in range(size // len(zeros)):
        crc = zlib.crc32(zeros, crc)
    return stream, crc


def zip_bytes(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip from (name, stored bytes, method, crc, declared uncompressed size) members, headers
    written by hand so a test can declare any size (and any name) it likes in both the local and
    central headers."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, declared in members:
        encoded = name.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), declared,
                              len(encoded), 0) + encoded + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data),
                                  declared, len(encoded), 0, 0, 0, 0, 0o100644 << 16, offset) + encoded)
    directory = out.tell()
    out.write(central.getvalue())
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central.getvalue()),
                          directory, 0))
    return out.getvalue()


def write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    path.write_bytes(zip_bytes(members))
    return path


def stored(name: str, data: bytes) -> tuple[str, bytes, int, int, int]:
    return name, data, 0, zlib.crc32(data), len(data)


@pytest.fixture(scope="module")
def bomb_parts(tmp_path_factory) -> dict:
    """Ten real and ten fake JPEGs (a usable data set) and the 3 GiB bomb, built once."""
    started = time.perf_counter()
    stream, crc = deflated_zeros(BOMB_SIZE)
    seconds = time.perf_counter() - started
    tree = build_plain(tmp_path_factory.mktemp("faces"), per_class=10)
    images = [stored(p.relative_to(tree).as_posix(), p.read_bytes()) for p in sorted(tree.rglob("*.jpg"))]
    print(f"\nbomb: {BOMB_SIZE:,} bytes of zeros deflated to {len(stream):,} bytes, built in {seconds:.2f} s")
    return {"images": images, "stream": stream, "crc": crc}


def wchar() -> int:
    """Bytes this process has passed to write() so far (all threads, all files)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_measured(archive: Path, tmp_path: Path, **data) -> tuple[IngestReport, int, float]:
    """Ingest ``archive``: the report, the bytes written meanwhile and the seconds it took."""
    if not Path("/proc/self/io").is_file():
        pytest.skip("/proc/self/io is not available to count the bytes written")
    cfg = DataConfig(source=str(archive), **data)
    before, started = wchar(), time.perf_counter()
    report = ingest(cfg, 7, tmp_path / "raw", tmp_path / "out" / "manifest.csv", tmp_path / "out" / "report.json")
    return report, wchar() - before, time.perf_counter() - started


def items(report: IngestReport) -> dict[str, dict[str, str]]:
    return {item["path"].split("::", 1)[1]: item for item in report.items}


def assert_reconciled(report: IngestReport) -> None:
    assert report.seen == report.kept + report.quarantined == 21
    assert report.quarantined == len(report.items) == sum(report.by_reason.values())


def test_bomb_declaring_its_size_is_quarantined_without_a_byte_written(bomb_parts, tmp_path):
    bomb = (BOMB_NAME, bomb_parts["stream"], 8, bomb_parts["crc"], BOMB_SIZE)
    archive = write_zip(tmp_path / "bomb.zip", [*bomb_parts["images"], bomb])
    report, written, seconds = run_measured(archive, tmp_path)
    print(f"\nhonest bomb ({archive.stat().st_size:,} byte zip -> {BOMB_SIZE:,} bytes): "
          f"{written:,} bytes written by ingest in {seconds:.2f} s")

    item = items(report)[BOMB_NAME]
    assert item["reason"] == "too_large"
    assert f"declares {BOMB_SIZE:,} bytes" in item["detail"] and "not extracted" in item["detail"]
    assert f"{member_limit(DataConfig().max_pixels):,} bytes" in item["detail"]
    assert not (tmp_path / "raw" / "bomb" / "fake" / "huge.jpg").exists()
    assert report.kept == 20 and report.by_reason == {"too_large": 1}
    assert_reconciled(report)
    assert folder_bytes(tmp_path / "raw") < 1 * MiB  # the 20 small JPEGs
    assert written < 2 * MiB  # the JPEGs, the manifest, the report and the log: never the bomb


def test_bomb_lying_about_its_size_is_cut_off_past_what_it_declares(bomb_parts, tmp_path):
    """Both headers declare 1,000 bytes; zipfile alone would stop there and only then fail the CRC,
    so ingest reads past the declared size itself and cuts the stream one byte past it: a member
    that holds more than it declares is a forged header, and the 3 GiB never reach the disk."""
    bomb = (BOMB_NAME, bomb_parts["stream"], 8, bomb_parts["crc"], 1000)
    archive = write_zip(tmp_path / "bomb.zip", [*bomb_parts["images"], bomb])
    report, written, seconds = run_measured(archive, tmp_path)
    print(f"\nlying bomb: cut off at 1,001 bytes; {written:,} bytes written by ingest in {seconds:.2f} s")

    item = items(report)[BOMB_NAME]
    assert item["reason"] == "too_large", item
    assert "cut off at 1,001 bytes" in item["detail"] and "declares 1,000 bytes" in item["detail"]
    assert "forged size" in item["detail"]
    assert not (tmp_path / "raw" / "bomb" / "fake" / "huge.jpg").exists()
    assert_reconciled(report)
    assert written < 2 * MiB  # the JPEGs, the manifest, the report: never the 3 GiB
    assert folder_bytes(tmp_path / "raw") < 1 * MiB


def test_the_archive_total_is_capped_too(bomb_parts, tmp_path):
    """data.max_archive_bytes: what the members declare is summed before extraction, and what
    they write is counted while streaming; a member declaring past it is not extracted at all, and
    a lying one is cut where its own header's size ends."""
    images = bomb_parts["images"]
    total_images = sum(len(data) for _, data, *_ in images)
    lying = (BOMB_NAME, bomb_parts["stream"], 8, bomb_parts["crc"], 1000)
    honest_big = stored("real/big.jpg", bytes(256 * 1024))
    archive = write_zip(tmp_path / "bomb.zip", [*images, lying, honest_big])
    limit = total_images + 200_000  # room for the images and a bit, not for big.jpg's 256 KiB
    report, written, _ = run_measured(archive, tmp_path, max_archive_bytes=limit)
    found = items(report)
    assert found["real/big.jpg"]["reason"] == "too_large"
    assert "data.max_archive_bytes" in found["real/big.jpg"]["detail"]
    assert found[BOMB_NAME]["reason"] == "too_large" and "cut off" in found[BOMB_NAME]["detail"]
    assert report.seen == report.kept + report.quarantined == 22 and report.kept == 20
    assert written < limit + 1 * MiB


def test_nested_archives_are_not_extracted(tmp_path):
    tree = build_plain(tmp_path / "faces", per_class=10)
    members = [stored(p.relative_to(tree).as_posix(), p.read_bytes()) for p in sorted(tree.rglob("*.jpg"))]
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as bundle:
        bundle.writestr("fake/inside.jpg", members[0][1])
    nested = ["fake/more.zip", "real/layer.tar.gz", "real/stuff.7z", "fake/images.TAR"]
    members += [stored(name, inner.getvalue()) for name in nested]
    archive = write_zip(tmp_path / "nested.zip", members)
    cfg = DataConfig(source=str(archive))
    report = ingest(cfg, 7, tmp_path / "raw", tmp_path / "out" / "manifest.csv", tmp_path / "out" / "report.json")
    found = items(report)
    for name in nested:
        assert found[name]["reason"] == "nested_archive" and "not extracted" in found[name]["detail"]
        assert not (tmp_path / "raw" / "nested" / name).exists()
    assert not list((tmp_path / "raw").rglob("inside.jpg"))
    assert report.kept == 20 and report.seen == report.kept + report.quarantined == 24
    assert report.by_reason == {"nested_archive": 4}


class Endless(io.RawIOBase):
    """A stream of zeros that never ends, for the cap's own check."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        buffer[:] = bytes(len(buffer))
        return len(buffer)


def test_copy_capped_stops_before_the_cap_and_leaves_nothing(tmp_path):
    target = tmp_path / "member"
    assert copy_capped(io.BufferedReader(Endless()), target, 3 * MiB + 5) is None
    assert not target.exists()
    assert copy_capped(io.BytesIO(b"x" * 10), target, 10) == 10 and target.read_bytes() == b"x" * 10
    assert copy_capped(io.BytesIO(b"x" * 11), target, 10) is None and not target.exists()


def test_source_inside_the_raw_folder_is_refused(tmp_path):
    """Ingest replaces raw_dir as a whole; a source inside it would be deleted by its own run."""
    from fakeface.ingest import IngestError

    tree = build_plain(tmp_path / "raw" / "mine", per_class=2)
    with pytest.raises(IngestError, match="lies inside .*raw.*move it out"):
        ingest(DataConfig(source=str(tree)), 7, tmp_path / "raw", tmp_path / "m.csv", tmp_path / "r.json")
    assert tree.is_dir() and len(list(tree.rglob("*.jpg"))) == 4
    assert os.listdir(tmp_path) == ["raw"]


def padding_zip(path: Path, images, count: int, lying: bool) -> Path:
    """``images`` and ``count`` members of 20 MiB of zeros named fake/pad_NNN.jpg, deflated (each
    about 20 KiB), declaring their size honestly or 1,000 bytes."""
    stream, crc = deflated_zeros(20 * MiB)
    pads = [(f"fake/pad_{k:03d}.jpg", stream, 8, crc, 1000 if lying else 20 * MiB) for k in range(count)]
    return write_zip(path, [*images, *pads])


@pytest.mark.parametrize("lying", [False, True])
def test_members_that_compress_like_no_image_are_refused_by_their_ratio(bomb_parts, tmp_path, lying):
    from fakeface.ingest.archives import MAX_RATIO

    count = 40
    archive = padding_zip(tmp_path / "pads.zip", bomb_parts["images"], count, lying)
    report, written, seconds = run_measured(archive, tmp_path)
    print(f"\n{count} pads of 20 MiB ({'lying' if lying else 'honest'} headers) in a {archive.stat().st_size:,} "
          f"byte zip: {written:,} bytes written in {seconds:.2f} s")
    found = items(report)
    pads = [found[f"fake/pad_{k:03d}.jpg"] for k in range(count)]
    assert all(item["reason"] == "too_large" for item in pads)
    assert report.kept == 20 and report.seen == report.kept + report.quarantined == 20 + count
    if lying:  # cut off one byte past what each declares, the partial file removed at once
        assert all("forged size" in item["detail"] for item in pads)
        assert written < 2 * MiB
    else:  # refused from the central directory: not a byte of them written
        assert all(f"image files do not compress past {MAX_RATIO}:1" in item["detail"] for item in pads)
        assert written < 2 * MiB
    assert folder_bytes(tmp_path / "raw") < 1 * MiB  # only the 20 small JPEGs stay


def test_a_zip_of_real_faces_is_extracted_whole(shared_sample, tmp_path):
    """JPEG members barely compress: none comes near the ratio guard."""
    with zipfile.ZipFile(tmp_path / "faces.zip", "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(shared_sample.rglob("*.jpg")):
            bundle.write(path, path.relative_to(shared_sample).as_posix())
    report, _, _ = run_measured(tmp_path / "faces.zip", tmp_path)
    faces = len(list(shared_sample.rglob("*.jpg")))
    assert report.seen == faces and "too_large" not in report.by_reason
    assert report.kept + report.by_reason.get("duplicate", 0) == faces

"""``fakeface ingest`` on data it cannot use fails like a tool, not like a program: exit status 2
and one line saying why, no traceback (IngestError is a FakefaceError, which the CLI catches)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from fakeface import FakefaceError
from fakeface.ingest import IngestError
from ingest_data import write_jpeg


def _fakeface_ingest(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    params = tmp_path / "params.yaml"
    command = [sys.executable, "-m", "fakeface", "--params", str(params), *options, "ingest",
               "--raw-dir", "raw", "--manifest", "manifest.csv", "--report", "report.json"]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_ingest_error_is_a_fakeface_error() -> None:
    assert issubclass(IngestError, FakefaceError)


def test_unusable_data_exits_2_with_one_line(tmp_path: Path) -> None:
    faces = tmp_path / "faces"
    for k in range(6):
        write_jpeg(faces / "real" / f"{k}.jpg")
        (faces / "fake").mkdir(parents=True, exist_ok=True)
        (faces / "fake" / f"{k}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"source": str(faces)}}))

    quiet = _fakeface_ingest(tmp_path, "--log-level", "ERROR")
    lines = [line for line in quiet.stderr.splitlines() if line.strip()]
    assert quiet.returncode == 2, quiet.stderr
    assert len(lines) == 1, quiet.stderr
    assert "split 'train' has no 'fake' images" in lines[0] and "report.json" in lines[0]
    assert "Traceback" not in quiet.stderr
    assert (tmp_path / "report.json").is_file() and not (tmp_path / "manifest.csv").exists()

    # At the default level the progress is logged too, but the error is still one line, the last.
    message = lines[0].split(": ", 1)[1]  # after "<time> ERROR fakeface"
    chatty = _fakeface_ingest(tmp_path)
    assert chatty.returncode == 2 and "Traceback" not in chatty.stderr
    last = chatty.stderr.strip().splitlines()[-1]
    assert " ERROR " in last and last.endswith(message)

"""Faults in the data stages: what a kill, a full disk, a damaged shard or a model file carrying
code leaves behind. Each case is injected for real (``kill -9`` of the command, a small tmpfs that
fills up, bytes changed on disk, a Keras Lambda layer) and checked through the command line where
a user would meet it: one line, exit status 2, and no partial output a later stage could take as
complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import small_params
from fakeface.data.manifest import read_manifest
from fakeface.stages.paths import AugmentPaths, IngestPaths
from fakeface.stages import get_stage
from ingest_data import write_jpeg

SHARD_SIZE = 10


def one_line_exit_2(code: int, capsys: pytest.CaptureFixture, *expected: str) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1, f"expected one line, got:\n{captured.err}"
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def cli(*args: str) -> int:
    from fakeface.cli.main import main

    return main(["--log-level", "WARNING", *args])


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path -> sha256 (empty for a missing folder)."""
    if not folder.exists():
        return {}
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def partial_siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(f".{path.name}.*"))


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """A 120-image synthetic set ingested once: (params, params.yaml, manifest path)."""
    root = tmp_path_factory.mktemp("ingested")
    params = small_params(augment={"shard_size": SHARD_SIZE})
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    paths = IngestPaths.in_artifacts(root)
    get_stage("ingest").run(params, paths)
    return params, params_file, paths.manifest


def augment(params, manifest: Path, shards: Path) -> None:
    get_stage("augment").run(params, AugmentPaths(manifest=manifest, shards=shards))


# --------------------------------------------------------------------------- shard integrity


def test_train_refuses_a_truncated_or_altered_shard(ingested, tmp_path, capsys, monkeypatch):
    params, params_file, manifest = ingested
    shards = tmp_path / "data" / "shards"
    augment(params, manifest, shards)
    pristine = tmp_path / "pristine"
    shutil.copytree(shards, pristine)
    truncated = shards / "train" / "train-00002-of-00010.tfrecord"
    truncated.write_bytes(truncated.read_bytes()[:-100])  # a record boundary need not be hit
    altered = shards / "valid" / "valid-00000-of-00002.tfrecord"
    data = bytearray(altered.read_bytes())
    data[len(data) // 3] ^= 0x20  # one byte, same size
    altered.write_bytes(bytes(data))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    capsys.readouterr()
    started = time.perf_counter()
    code = cli("--params", str(params_file), "train", "--checkpoint-dir", str(tmp_path / "ckpt"))
    line = one_line_exit_2(code, capsys, "data/shards/train/train-00002-of-00010.tfrecord", "truncated or altered")
    with capsys.disabled():
        print(f"\ntrain on a truncated shard: exit 2 after {time.perf_counter() - started:.1f} s: {line}")

    shutil.copyfile(pristine / "train" / truncated.name, truncated)  # the truncated one repaired
    code = cli("--params", str(params_file), "train", "--checkpoint-dir", str(tmp_path / "ckpt"))
    line = one_line_exit_2(code, capsys, "data/shards/valid/valid-00000-of-00002.tfrecord", "altered")
    assert "sha256" in line
    assert not (tmp_path / "models" / "model.keras").exists()


# --------------------------------------------------------------------------- kill -9 mid-write


def _start_augment(params_file: Path, manifest: Path, shards: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "fakeface", "--params", str(params_file), "--log-level", "WARNING",
               "augment", "--manifest", str(manifest), "--shards", str(shards)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _wait_mid_write(process: subprocess.Popen, shards: Path, files: int, timeout: float = 180) -> Path:
    """The staging folder once it holds ``files`` shard files (the writer is then blocked on the
    FIFO, so it cannot finish while we look)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"augment ended early ({process.returncode}): {process.stderr.read().decode()}")
        staging = list(shards.parent.glob(f".{shards.name}.partial-{process.pid}-*"))
        if staging and len(list(staging[0].rglob("*.tfrecord"))) >= files:
            return staging[0]
        time.sleep(0.05)
    raise AssertionError(f"augment did not reach shard {files} in {timeout} s")


def test_kill_9_during_augment_leaves_the_old_shards_or_none_and_a_rerun_is_identical(ingested, tmp_path):
    """One image file is swapped for a FIFO, so both commands block while reading it, in the middle
    of the train split (earlier shards written, one open): killed there with SIGKILL, a fresh
    output folder is still absent and an existing one byte-identical; after the image is back, a
    rerun writes shards byte-identical to a clean run's and removes what the killed runs left."""
    params, params_file, manifest = ingested
    reference = tmp_path / "reference"
    augment(params, manifest, reference)
    clean = digests(reference)

    frame = read_manifest(manifest)
    train = frame[frame["split"] == "train"].sort_values(["label", "path"], key=lambda c: c.map(
        {"real": 0, "fake": 1}) if c.name == "label" else c)
    position = len(train) * 2 // 3
    image = Path(train["path"].iloc[position])
    shards_before_it = position // SHARD_SIZE + 1  # the finished ones and the open one

    fresh = tmp_path / "fresh" / "shards"
    old = tmp_path / "old" / "shards"
    shutil.copytree(reference, old)
    saved = image.with_name(image.name + ".saved")
    os.rename(image, saved)
    os.mkfifo(image)
    processes = []
    try:
        processes = [_start_augment(params_file, manifest, out) for out in (fresh, old)]
        staging = [_wait_mid_write(p, out, shards_before_it) for p, out in zip(processes, (fresh, old), strict=True)]
        for process in processes:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            assert process.returncode == -signal.SIGKILL
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        image.unlink()
        os.rename(saved, image)

    for folder in staging:  # killed mid-write: a partial folder, but beside the output, not in it
        assert folder.is_dir() and not (folder / "index.json").exists()
        assert len(list(folder.rglob("*.tfrecord"))) >= shards_before_it
    assert not fresh.exists()
    assert digests(old) == clean

    for out in (fresh, old):
        augment(params, manifest, out)  # the rerun (dvc repro runs the stage again)
        assert digests(out) == clean
        assert partial_siblings(out) == []


# --------------------------------------------------------------------------- a full disk


@pytest.fixture()
def small_disk(tmp_path):
    """An 8 MiB tmpfs mounted for the test (needs root or CAP_SYS_ADMIN, else a skip)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                                capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, PermissionError) as error:
        pytest.skip(f"cannot mount a tmpfs to fill: {error}")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {result.stderr.strip()}")
    yield mount
    if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path, leave: int) -> None:
    """Take all but ``leave`` bytes of the disk."""
    stats = os.statvfs(disk)
    size = stats.f_bavail * stats.f_frsize - leave
    with open(disk / "filler", "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, size)


def test_full_disk_during_ingest(small_disk, tmp_path, capsys):
    disk = small_disk
    outputs = ["--raw-dir", str(disk / "raw"), "--manifest", str(disk / "manifest.csv"),
               "--report", str(disk / "report.json")]
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(small_params(data={"synthetic": {"images_per_class": 20, "image_size": 32}})
                                    .model_dump(mode="json")))
    assert cli("--params", str(first), "ingest", *outputs) == 0
    before = digests(disk)
    fill(disk, leave=32 * 1024)
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(yaml.safe_dump(small_params(data={"synthetic": {"images_per_class": 300, "image_size": 64}})
                                     .model_dump(mode="json")))
    capsys.readouterr()
    started = time.perf_counter()
    code = cli("--params", str(bigger), "ingest", *outputs)
    line = one_line_exit_2(code, capsys, f"disk full writing {disk / 'raw'}: No space left on device")
    with capsys.disabled():
        print(f"\ningest on a full disk: exit 2 after {time.perf_counter() - started:.2f} s: {line}")
    after = digests(disk)
    after.pop("filler")
    assert after == before  # the previous raw/, manifest and report, untouched
    assert sorted(os.listdir(disk)) == ["filler", "manifest.csv", "raw", "report.json"]


def test_full_disk_during_augment(ingested, small_disk, capsys):
    params, params_file, manifest = ingested
    disk = small_disk
    augment(params, manifest, disk / "shards")
    before = digests(disk)
    fill(disk, leave=16 * 1024)
    capsys.readouterr()
    started = time.perf_counter()
    code = cli("--params", str(params_file), "augment", "--manifest", str(manifest), "--shards", str(disk / "shards"))
    line = one_line_exit_2(code, capsys, f"disk full writing {disk / 'shards'}:")
    with capsys.disabled():
        print(f"\naugment on a full disk: exit 2 after {time.perf_counter() - started:.2f} s: {line}")
    after = digests(disk)
    after.pop("filler")
    assert after == before
    assert sorted(os.listdir(disk)) == ["filler", "shards"]


def test_archive_larger_than_the_free_disk_fails_before_writing(small_disk, tmp_path):
    from fakeface.config import DataConfig
    from fakeface.ingest import IngestError, ingest

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name in ("real/a.jpg", "real/b.jpg", "fake/c.jpg"):
            bundle.writestr(name, bytes(4 << 20))  # 12 MiB declared in all, on an 8 MiB disk
    raw = small_disk / "raw"
    with pytest.raises(IngestError, match=rf"disk full writing {raw}: .*declares 12,582,912 bytes to extract"):
        ingest(DataConfig(source=str(archive)), 7, raw, small_disk / "m.csv", small_disk / "r.json")
    assert os.listdir(small_disk) == []


# --------------------------------------------------------------------------- untrusted models


@pytest.fixture()
def evil_model(tmp_path):
    """A .keras file whose Lambda layer would create ``marker`` when run; returns (file, marker)."""
    import keras

    marker = tmp_path / "marker"
    target = str(marker)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: (open(target, "w").close(), t)[1])(inputs)  # noqa: SIM115
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "evil.keras"
    keras.Model(inputs, outputs).save(path)
    marker.unlink(missing_ok=True)  # building the graph ran the lambda once; loading must not
    return path, marker


def test_model_carrying_code_is_refused_and_not_run(evil_model, monkeypatch):
    from fakeface.model import classifier as model_module
    from fakeface.model.classifier import ModelFileError, load_model_file

    path, marker = evil_model
    refusal = r"contains code \(a Lambda layer\); refusing to run it"
    with pytest.raises(ModelFileError, match=refusal):
        load_model_file(path)
    assert not marker.exists()
    # Without the config scan, Keras' safe mode alone still refuses it.
    monkeypatch.setattr(model_module, "_code_in", lambda _path: None)
    with pytest.raises(ModelFileError, match=refusal):
        load_model_file(path)
    assert not marker.exists()


def test_predict_with_a_model_carrying_code_exits_2(evil_model, tmp_path, capsys, monkeypatch):
    path, marker = evil_model
    image = write_jpeg(tmp_path / "face.jpg")
    monkeypatch.chdir(tmp_path)  # no params.yaml: predict's defaults
    capsys.readouterr()
    code = cli("predict", str(image), "--model", str(path))
    one_line_exit_2(code, capsys, f"{path} contains code (a Lambda layer); refusing to run it")
    assert not marker.exists()

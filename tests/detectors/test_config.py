"""configs/cameras.yaml: the example loads; mistakes name file:line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from atmguard.core.errors import ConfigError, Position
from atmguard.detectors.config import load_cameras


def test_example_cameras_load(repo: Path) -> None:
    cams = load_cameras(repo / "configs")
    assert cams and all(c.atm_id.startswith("atm-zhez-") for c in cams.values())
    hall = cams["cam-zhez-003-hall"]
    assert hall.zone and len(hall.zone) >= 3 and hall.analysis_fps == 5
    assert hall.max_people == 2  # the default: passers-by share the corridor, the one in the zone is followed
    assert cams["cam-zhez-005-lobby"].max_people == 3  # a queue as well
    assert cams["cam-zhez-001-front"].max_people == 2 and cams["cam-zhez-001-front"].scan_every_s == 1.0
    assert any(c.source.startswith("rtsp://") for c in cams.values())


def test_bad_field_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "cameras.yaml").write_text(
        "cameras:\n"
        "  - camera_id: c1\n"
        "    atm_id: atm-zhez-001\n"
        "    source: rtsp://x/1\n"
        "    analysis_fps: -3\n"
    )
    with pytest.raises(ConfigError) as err:
        load_cameras(tmp_path)
    path = str(tmp_path / "cameras.yaml")
    assert err.value.position == Position(path, 5, None, "cameras[0].analysis_fps")  # the line, as always; no column
    assert str(err.value) == f"{path}:5: cameras[0].analysis_fps: Input should be greater than 0"


def test_a_value_below_its_key_is_reported_at_the_key(tmp_path: Path) -> None:
    (tmp_path / "cameras.yaml").write_text(
        "cameras:\n"
        "  - camera_id: c1\n"
        "    atm_id: a\n"
        "    analysis_fps:\n"
        "      -3\n"
    )
    with pytest.raises(ConfigError) as err:
        load_cameras(tmp_path)
    assert (err.value.line, err.value.column, err.value.field) == (4, None, "cameras[0].analysis_fps")


def test_unknown_key_and_short_zone_are_errors(tmp_path: Path) -> None:
    (tmp_path / "cameras.yaml").write_text(
        "cameras:\n  - camera_id: c1\n    atm_id: a\n    zoen: [[0, 0], [1, 1], [2, 0]]\n"
    )
    with pytest.raises(ConfigError, match="zoen"):
        load_cameras(tmp_path)
    (tmp_path / "cameras.yaml").write_text("cameras:\n  - camera_id: c1\n    atm_id: a\n    zone: [[0, 0], [1, 1]]\n")
    with pytest.raises(ConfigError, match="at least 3 points"):
        load_cameras(tmp_path)


def test_duplicate_camera_and_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "cameras.yaml").write_text(
        "cameras:\n  - camera_id: c1\n    atm_id: a\n  - camera_id: c1\n    atm_id: b\n"
    )
    with pytest.raises(ConfigError, match="duplicate camera_id 'c1'") as err:
        load_cameras(tmp_path)
    assert (err.value.line, err.value.field) == (4, "cameras[1].camera_id")
    (tmp_path / "cameras.yaml").write_text("cameras:\n  - camera_id: [c1\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_cameras(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'cameras.yaml'}:3: not valid YAML: ")


def test_max_people_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "cameras.yaml").write_text(
        "cameras:\n  - camera_id: c1\n    atm_id: a\n    zone: [[0, 0], [9, 0], [9, 9]]\n    max_people: 0\n"
    )
    with pytest.raises(ConfigError) as err:
        load_cameras(tmp_path)
    assert (err.value.field, err.value.line) == ("cameras[0].max_people", 5)

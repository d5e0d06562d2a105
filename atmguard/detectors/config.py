"""Per-camera configuration (configs/cameras.yaml): where the frames come from, the ATM zone, thresholds.

Strict models (unknown keys are errors) whose fields explain themselves; load errors name the
file, line and field, as operators edit these by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atmguard.core import yamlpos
from atmguard.core.errors import ConfigError, Position


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Thresholds(Strict):
    """Geometry and timing thresholds; the defaults were tuned on the real footage (docs/detectors.md)."""

    # hand at the ear, pose cue (all distances in shoulder widths)
    ear_distance: float = Field(default=0.45, gt=0, title="Hand-to-ear distance", description="Nearest hand point to the ear, in shoulder widths, below which the hand is at the ear.")
    min_visibility: float = Field(default=0.5, ge=0, le=1, description="Pose visibility required of the wrist AND the elbow.")
    beside_ear: float = Field(default=0.5, description="Hand position along nose->ear (0 = nose, 1 = ear) above which it is beside the ear, not in front of the mouth.")
    elbow_angle_max_deg: float = Field(default=70.0, gt=0, le=180, description="Shoulder-elbow-wrist angle below which the arm is folded up (a raised elbow).")
    # hand at the ear, hands + face mesh cue (in face widths)
    hand_face_distance: float = Field(default=0.5, gt=0, description="Nearest hand landmark to the face's ear point, in face widths.")
    hand_face_beside: float = Field(default=0.6, description="Hand centre along nose->ear beyond which it is beside the ear.")
    hand_face_below_chin: float = Field(default=1.0, description="Hand centre lower than this (0 = forehead, 1 = chin) is not at the ear.")
    # head and gaze
    yaw_offset: float = Field(default=0.0, description="Yaw of a customer facing the ATM screen from this camera (0 = camera above the screen).")
    yaw_away: float = Field(default=0.4, gt=0, description="|yaw - offset| above which the head is turned away (a glance starts).")
    yaw_back: float = Field(default=0.25, gt=0, description="|yaw - offset| below which a glance has ended (hysteresis).")
    pose_yaw_fallback: bool = Field(default=False, description="Estimate yaw from pose ears/nose when no face mesh is found (pose invents faces on rear views: off by default).")
    iris_away: float = Field(default=0.15, gt=0, description="|iris position - 0.5| above which the eyes look aside.")
    # temporal
    on_phone_after_s: float = Field(default=3.0, ge=0, description="Seconds of hand at the ear before on_phone starts.")
    on_phone_min_fraction: float = Field(default=0.6, gt=0, le=1, description="Share of analysed frames in those seconds that must show it.")
    on_phone_end_s: float = Field(default=2.0, gt=0, description="Seconds without the hand at the ear after which on_phone ends.")
    gaze_away_after_s: float = Field(default=1.5, ge=0, description="Seconds of eyes or head away before gaze_away starts.")
    gaze_back_s: float = Field(default=0.8, gt=0, description="Seconds facing the screen again before gaze_away ends.")
    glance_window_s: float = Field(default=30.0, gt=0, description="Window in which looking_around counts glances away.")
    min_glances: int = Field(default=2, ge=1, description="Glances in the window that make looking_around.")
    present_after_s: float = Field(default=0.5, ge=0, description="Seconds in the zone before present starts.")
    present_end_s: float = Field(default=3.0, gt=0, description="Seconds with nobody in the zone after which present (the visit) ends.")
    emit_every_s: float = Field(default=5.0, gt=0, description="While a behaviour lasts, a fact at most this often.")


class Gating(Strict):
    """Cheap motion/presence gating so an idle camera costs a small fraction of a busy one."""

    enabled: bool = True
    width: int = Field(default=160, ge=32, description="Width of the grey thumbnail the motion check runs on.")
    pixel_threshold: int = Field(default=20, ge=1, le=255, description="Grey-level change that counts a thumbnail pixel as moving.")
    min_motion_fraction: float = Field(default=0.003, ge=0, le=1, description="Share of zone pixels moving that wakes the models.")
    keep_running_s: float = Field(default=3.0, ge=0, description="Keep the models running this long after the last person or motion.")
    recheck_s: float = Field(default=10.0, gt=0, description="Run the models at least this often even without motion.")


class Snapshots(Strict):
    """JPEG of the frame referenced from facts; no faces are stored anywhere else, no identities ever."""

    dir: Path | None = Field(default=None, description="Folder for snapshots; unset = no snapshots.")
    retention_s: float = Field(default=86400.0, gt=0, description="Snapshots older than this are deleted.")
    behaviors: list[str] = Field(default_factory=lambda: ["on_phone", "looking_around"])
    quality: int = Field(default=80, ge=10, le=100)


class CameraConfig(Strict):
    """One camera at one ATM."""

    camera_id: str = Field(min_length=1)
    atm_id: str = Field(min_length=1)
    source: str = Field(default="", description="File path, rtsp:// or http(s):// URL, or a device number.")
    zone: list[tuple[float, float]] | None = Field(
        default=None, description="ATM zone polygon in frame pixels; a person counts when feet or hips are inside. Unset = whole frame."
    )
    max_people: int = Field(
        default=2, ge=1, le=6, title="People looked for",
        description="2 or more (default 2) = several people: everyone is found about once a second (scan_every_s) and "
                    "the person in the zone nearest the camera is followed, tracked in between at the cost of the "
                    "single-person model (docs/detectors.md; about 2 to 8% more CPU with one person in view). "
                    "1 = single-person pose only: it follows whoever it locks onto, in the zone or not (a bystander "
                    "can hold it while the customer is missed). 3 where a queue and passers-by share the view.",
    )
    scan_every_s: float = Field(
        default=1.0, gt=0, le=60, title="Multi-person scan interval",
        description="max_people > 1: seconds between looks for everyone in view (the multi-person model); in between "
                    "the cheap single-person tracker follows the person chosen. A scan also runs at once when the "
                    "tracker loses that person or they leave the zone. Shorter: newcomers are seen sooner, at more CPU.",
    )
    analysis_fps: float = Field(default=5.0, gt=0, le=60, description="Frames analysed per second (the newest frame each time).")
    min_width: int = Field(default=640, ge=0, description="Frames narrower than this are upscaled first (small CCTV/QCIF sources).")
    use_hands: bool = Field(default=True, description="Run the hands model to confirm/carry hand-at-ear (on a head crop, only when a hand is near).")
    hands_model_complexity: int = Field(default=0, ge=0, le=1, description="0 = lite hand model (as accurate on the footage, 25% cheaper), 1 = full.")
    thresholds: Thresholds = Field(default_factory=Thresholds)
    gating: Gating = Field(default_factory=Gating)
    snapshots: Snapshots = Field(default_factory=Snapshots)

    @field_validator("zone")
    @classmethod
    def _zone_polygon(cls, v: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        if v is not None and len(v) < 3:
            raise ValueError("a zone needs at least 3 points [x, y]")
        return v


class CamerasFile(Strict):
    cameras: list[CameraConfig]


def load_cameras(config_dir: str | Path) -> dict[str, CameraConfig]:
    """Cameras by camera_id from `<config_dir>/cameras.yaml`; ConfigError names file:line and field."""
    path = Path(config_dir) / "cameras.yaml"
    if not path.exists():
        raise ConfigError("no cameras.yaml here", path=str(path))
    data = yamlpos.load_yaml(path.read_text(encoding="utf-8"), str(path), error=ConfigError, column=False)
    try:
        parsed = CamerasFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(err["msg"], position=_at(data, tuple(err["loc"]), path)) from None
    cams: dict[str, CameraConfig] = {}
    for i, cam in enumerate(parsed.cameras):
        if cam.camera_id in cams:
            where = _at(data, ("cameras", i, "camera_id"), path)
            raise ConfigError(f"duplicate camera_id {cam.camera_id!r}", position=where)
        cams[cam.camera_id] = cam
    return cams


def _at(data: Any, loc: tuple[str | int, ...], path: Path) -> Position:
    # at the key: the line an operator looks for; the messages name no column
    return yamlpos.locate(data, loc, path=str(path), at_key=True, column=False)

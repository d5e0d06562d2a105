"""The real models on real clips: calls found, hard negatives not, head turns counted, zones and visits."""

from __future__ import annotations

import pytest

from atmguard.core.contracts import BehaviorFact
from atmguard.detectors.config import CameraConfig, Thresholds
from atmguard.detectors.pipeline import iter_facts, iter_results
from tests.detectors.conftest import T0, footage

pytestmark = pytest.mark.slow  # MediaPipe models on real footage


def facts_of(name: str, **cfg: object) -> list[BehaviorFact]:
    config = CameraConfig(camera_id="cam-1", atm_id="atm-zhez-001", **cfg)  # type: ignore[arg-type]
    return list(iter_facts(footage(name), atm_id="atm-zhez-001", camera_id="cam-1", config=config, start_time=T0))


def of(facts: list[BehaviorFact], behavior: str) -> list[BehaviorFact]:
    return [f for f in facts if f.behavior == behavior]


# the main behaviours hold with the single-person model (max_people 1) and the multi-person one (2, the default)
BOTH_MODELS = pytest.mark.parametrize("max_people", [1, 2])


@BOTH_MODELS
def test_landline_call_starts_on_phone_after_the_minimum_duration(max_people: int) -> None:
    # 176x144 source, upscaled to 640 wide by default (min_width)
    facts = facts_of("a_suzie_landline_phone_at_ear.mp4", max_people=max_people)
    phone = of(facts, "on_phone")
    assert phone, facts
    start = phone[0]
    assert not start.ended and start.duration_s >= 3.0
    assert (start.ts - T0).total_seconds() < 4.0  # she is on the phone from the first frame
    assert start.started_at == T0
    assert phone[-1].ended and phone[-1].duration_s >= 4.0  # the clip ends, so does the call
    assert {f.camera_id for f in facts} == {"cam-1"} and {f.atm_id for f in facts} == {"atm-zhez-001"}
    assert all(0 < f.confidence <= 1 for f in phone)


def test_minimum_call_duration_is_configurable() -> None:
    longer = facts_of("a_suzie_landline_phone_at_ear.mp4", thresholds=Thresholds(on_phone_after_s=6.0))
    assert not of(longer, "on_phone")  # a 5 s clip cannot hold a 6 s minimum
    shorter = facts_of("a_suzie_landline_phone_at_ear.mp4", thresholds=Thresholds(on_phone_after_s=1.0))
    first = of(shorter, "on_phone")[0]
    assert 1.0 <= first.duration_s < 2.0


@BOTH_MODELS
def test_hard_negatives_are_not_on_phone(max_people: int) -> None:
    # facing the camera, eating, hand at the chin, smoking / phone held in front, photographing
    for name in ("c_akiyo_frontal.mp4", "c_intel_frontal_male.gif", "c_intel_asl_eat_hand_to_mouth.mkv",
                 "c_intel_asl_thanks_hand_at_chin.mkv", "c_ppdet_smoking_and_phone_in_front_cctv.gif",
                 "c_pexels3252428_phone_held_in_front_two_men.mp4"):
        facts = facts_of(name, analysis_fps=4, thresholds=Thresholds(on_phone_after_s=1.0), max_people=max_people)
        assert of(facts, "present"), name  # someone was there ...
        assert not of(facts, "on_phone"), (name, of(facts, "on_phone"))  # ... not on the phone, even at a 1 s minimum


def test_salesman_busy_hands_near_body_is_not_on_phone() -> None:
    config = CameraConfig(camera_id="cam-1", atm_id="atm", analysis_fps=3, thresholds=Thresholds(on_phone_after_s=1.0))
    src = footage("c_salesman_desk.mp4")
    facts = list(iter_facts(src, atm_id="atm", camera_id="cam-1", config=config, start_time=T0))
    assert not of(facts, "on_phone")


def test_head_turns_are_counted_as_glances() -> None:
    facts = facts_of("b_intel_headpose_female_turns.gif", analysis_fps=12.5)
    looking = of(facts, "looking_around")
    assert looking, facts
    assert max(f.count or 0 for f in looking) >= 2
    assert looking[0].window_s == 30.0


def test_head_roll_is_not_looking_around() -> None:
    results = list(iter_results(footage("b_intel_headpose_roll_pair.gif"), atm_id="atm", camera_id="cam",
                                config=CameraConfig(camera_id="cam", atm_id="atm", analysis_fps=6), start_time=T0))
    rolled = [r.signals for r in results if r.signals is not None and r.signals.yaw is not None]
    assert len(rolled) > 10
    assert not any(s.head_away for s in rolled)
    assert not any(f.behavior == "looking_around" for r in results for f in r.facts)


@BOTH_MODELS
def test_presence_counts_only_inside_the_zone(max_people: int) -> None:
    name = "d_hall_monitor_cctv_corridor.mp4"  # 176x144 CCTV corridor
    inside = facts_of(name, zone=[(20, 80), (95, 80), (95, 112), (20, 112)], max_people=max_people)  # where the man leaves the bag
    present = of(inside, "present")
    assert present and present[-1].ended
    assert (present[0].ts - T0).total_seconds() < 3.0
    nowhere = facts_of(name, zone=[(0, 115), (40, 115), (40, 144), (0, 144)], max_people=max_people)  # a corner nobody walks into
    assert not nowhere


def test_dwell_per_visit_at_a_standing_table() -> None:
    config = CameraConfig(camera_id="kiosk", atm_id="atm", analysis_fps=2,
                          zone=[(300, 280), (620, 280), (680, 430), (260, 430)])
    src = footage("d_intel_standing_table_rear_overhead.mp4")
    from atmguard.detectors.sources import VideoFileSource

    facts = list(iter_facts(VideoFileSource(src, analysis_fps=2, start_time=T0, max_seconds=50), atm_id="atm",
                            camera_id="kiosk", config=config))
    ends = [f for f in of(facts, "present") if f.ended]
    # people walk up one at a time: at least two separate visits in 50 s, each with its own start and dwell
    assert len(ends) >= 2, facts
    assert len({f.started_at for f in ends}) == len(ends)
    assert len({f.track_id for f in ends}) == len(ends)
    assert all(5.0 < f.duration_s < 40.0 for f in ends)
    # dwell grows while a visit lasts
    first = [f for f in of(facts, "present") if f.started_at == ends[0].started_at]
    assert [f.duration_s for f in first] == sorted(f.duration_s for f in first)
    # no one is on the phone or looking around in a rear view
    assert not of(facts, "on_phone") and not of(facts, "looking_around")

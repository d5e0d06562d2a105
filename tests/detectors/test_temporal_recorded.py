"""Temporal logic on landmark sequences recorded from the real footage (tests/detectors/data/*.npz),
looped to make calls longer than the clips: real landmarks, never invented numbers."""

from __future__ import annotations

from datetime import timedelta

from atmguard.core.contracts import BehaviorFact
from atmguard.detectors.config import Thresholds
from atmguard.detectors.geometry import Landmarks
from atmguard.detectors.recording import load
from atmguard.detectors.signals import compute
from atmguard.detectors.temporal import BehaviourTracker
from tests.detectors.conftest import DATA, T0

FPS = 5.0


def clip(name: str) -> list[Landmarks]:
    return [lm for _, lm in load(DATA / f"{name}.npz")]


def play(seq: list[Landmarks], thr: Thresholds | None = None) -> tuple[list[BehaviorFact], BehaviourTracker]:
    thr = thr or Thresholds()
    tr = BehaviourTracker("atm-zhez-001", "cam-1", thr)
    facts: list[BehaviorFact] = []
    for i, lm in enumerate(seq):
        facts += tr.update(T0 + timedelta(seconds=i / FPS), compute(lm, thr, None))
    facts += tr.finish()
    return facts, tr


def test_recorded_call_has_the_hand_at_the_ear_in_most_frames() -> None:
    thr = Thresholds()
    seq = clip("suzie_call")
    assert len(seq) >= 20
    hits = sum(compute(lm, thr, None).hand.value for lm in seq)
    assert hits / len(seq) >= 0.7
    assert sum(compute(lm, thr, None).hand.value for lm in clip("akiyo_frontal")) == 0


def test_a_long_call_is_one_behaviour_with_growing_duration() -> None:
    seq = clip("suzie_call") * 12  # 5 s looped: a one-minute call
    facts, _ = play(seq, Thresholds(emit_every_s=5.0))
    phone = [f for f in facts if f.behavior == "on_phone"]
    assert len({f.started_at for f in phone}) == 1  # one call, not many
    assert phone[0].duration_s >= 3.0 and not phone[0].ended
    assert phone[-1].ended and phone[-1].duration_s >= 55.0
    live = [f for f in phone if not f.ended]
    durations = [f.duration_s for f in live]
    assert durations == sorted(durations) and durations[-1] >= 50.0
    gaps = [(b.ts - a.ts).total_seconds() for a, b in zip(live, live[1:], strict=False)]
    assert gaps and all(g >= 5.0 for g in gaps)  # at most every emit_every_s
    assert len({f.id for f in facts}) == len(facts)


def test_call_ends_when_the_hand_comes_down_while_the_person_stays() -> None:
    seq = clip("suzie_call") * 3 + clip("akiyo_frontal") * 2  # 15 s call, then 10 s facing the screen
    facts, tr = play(seq, Thresholds(on_phone_end_s=2.0))
    phone = [f for f in facts if f.behavior == "on_phone"]
    end = [f for f in phone if f.ended]
    assert len(end) == 1
    assert 12.0 <= end[0].duration_s <= 16.0
    assert (end[0].ts - T0).total_seconds() < 18.0  # ends ~2 s after the hand came down, not at the stream end
    present_end = [f for f in facts if f.behavior == "present" and f.ended]
    assert len(present_end) == 1 and present_end[0].duration_s >= 24.0  # same visit throughout


def test_a_scratch_of_the_ear_is_not_a_call() -> None:
    call = clip("suzie_call")
    seq = call[:10] + clip("akiyo_frontal") * 2  # hand up for 2 s only
    facts, _ = play(seq)
    assert not [f for f in facts if f.behavior == "on_phone"]
    facts, _ = play(seq, Thresholds(on_phone_after_s=1.0))  # unless the operator asks for 1 s
    assert [f for f in facts if f.behavior == "on_phone"]


def test_hand_at_the_chin_repeated_is_not_a_call() -> None:
    facts, _ = play(clip("asl_thanks_chin") * 8, Thresholds(on_phone_after_s=1.0))
    assert not [f for f in facts if f.behavior == "on_phone"]


def test_glances_are_counted_in_the_window_and_age_out() -> None:
    turns = clip("female_turns")
    calm = clip("akiyo_frontal")
    seq = turns + calm + turns + calm * 8  # two bouts of head turning, then 40 s calm
    facts, _ = play(seq, Thresholds(glance_window_s=20.0, min_glances=2))
    looking = [f for f in facts if f.behavior == "looking_around"]
    assert looking and not looking[0].ended
    assert max(f.count or 0 for f in looking if not f.ended) >= 4  # both bouts, each with turns both ways
    assert looking[-1].ended and looking[-1].count is not None and looking[-1].count < 2  # aged out of the window
    assert all(f.window_s == 20.0 for f in looking)

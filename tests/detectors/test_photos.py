"""Hand at the ear on real photographs: calls found, a hand at the mouth not."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from atmguard.detectors.config import CameraConfig
from atmguard.detectors.landmarks import LandmarkModels
from atmguard.detectors.pipeline import CameraPipeline
from tests.detectors.conftest import footage

pytestmark = pytest.mark.slow  # MediaPipe models on real footage


def photo(name: str) -> np.ndarray:
    img = cv2.imread(str(footage(name)))
    assert img is not None
    return img


@pytest.fixture(scope="module")
def still() -> Iterator[CameraPipeline]:
    models = LandmarkModels(static=True)
    pipe = CameraPipeline(CameraConfig(camera_id="cam", atm_id="atm"), models=models)
    yield pipe
    models.close()


@pytest.mark.parametrize("name", ["a_hagrid_call_gesture_1.jpg", "a_hagrid_call_gesture_2.jpg", "a_hagrid_call_gesture_3.jpg"])
def test_call_gesture_is_hand_at_ear(still: CameraPipeline, name: str) -> None:
    _lm, s, _ = still.analyse(photo(name))
    assert s.person and s.hand.value, (name, s.hand)


def test_mobile_at_ear_where_pose_fails_is_carried_by_face_and_hands(still: CameraPipeline) -> None:
    lm, s, _ = still.analyse(photo("a_coco395_man_mobile_at_ear.jpg"))
    assert lm.pose is None or not s.hand.pose  # pose cannot see it ...
    assert lm.face is not None and s.hand.hands and s.hand.value  # ... face mesh + hands model can


def test_hand_at_mouth_while_eating_is_not_at_ear(still: CameraPipeline) -> None:
    lm, s, _ = still.analyse(photo("c_coco436_eating_hand_mouth_hardneg.jpg"))
    assert lm.pose is not None and s.person
    # the naive rule says yes here: a hand 0.37 shoulder widths from the ear
    assert s.hand.ratio is not None and s.hand.ratio < 0.45
    assert not s.hand.value

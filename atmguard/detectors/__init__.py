"""Behaviour detectors: MediaPipe on ATM camera frames -> behaviour facts.

Modules depend one way: geometry (landmark data, indices, boxes, zones) <- signals, people <-
follow <- landmarks (the model runners) <- pipeline <- runner, annotate, recording.

OpenCV and MediaPipe (over half a second to import) are imported inside the functions that use
them, never at module level, so importing any module here loads neither: `atmguard --help`,
config checks and the geometry stay quick (tests/detectors/test_layout.py checks it).
"""

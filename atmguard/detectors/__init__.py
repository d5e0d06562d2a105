"""Behaviour detectors: MediaPipe on ATM camera frames -> behaviour facts."""

"""The engine tests run on a real embedded broker: fixtures from tests/streamkit.py."""

from tests.streamkit import broker, rules_dir, workers  # noqa: F401  (fixtures)

"""The kafka tests run on a real embedded broker: fixtures from tests/streamkit.py."""

from tests.streamkit import broker  # noqa: F401  (a fixture)

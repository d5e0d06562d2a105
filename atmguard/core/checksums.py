"""SHA-256 of a file, read in 1 MiB blocks: what pinned binaries and cached model bundles are checked with."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256_cached(path: Path) -> str:
    """`file_sha256`, remembered while the file's size and modification time stay the same
    (a process that starts the broker many times hashes its 30 MB binary once)."""
    st = path.stat()
    return _cached(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _cached(path: Path, mtime_ns: int, size: int) -> str:
    return file_sha256(path)

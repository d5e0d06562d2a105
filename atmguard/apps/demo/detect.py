"""Behaviour facts for `atmguard demo` from the detectors on real footage.

The demo runs MediaPipe through `atmguard.detectors.pipeline.iter_facts` in a child process
(`python -m atmguard.apps.demo.detect CLIP ...`, one JSON fact per line on stdout): it uses the
other core while the stack starts, and MediaPipe's native log lines stay out of the timeline.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from atmguard.core.contracts import BehaviorFact, parse_event
from atmguard.core.settings import Settings

DEMO_CLIP = "a_suzie_landline_phone_at_ear.mp4"


def footage_dir() -> Path | None:
    """The real footage folder from the settings (ATMGUARD_FOOTAGE), or None when it is not there."""
    folder = Settings().footage
    return folder if folder.is_dir() else None


@dataclass
class DetectorRun:
    """Facts the detectors produced from one clip, or why there are none."""

    clip: Path
    facts: list[BehaviorFact]
    error: str | None = None


async def detect_clip(clip: Path, *, atm_id: str, camera_id: str, start_time: datetime,
                      timeout_s: float = 120.0) -> DetectorRun:
    """Run the detectors on `clip` in a child process; facts stamped from `start_time` on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "atmguard.apps.demo.detect", str(clip), atm_id, camera_id, start_time.isoformat(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return DetectorRun(clip, [], f"the detectors took longer than {timeout_s:.0f}s")
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return DetectorRun(clip, [], f"the detectors failed (exit {proc.returncode}): {tail[0]}")
    facts: list[BehaviorFact] = []
    for line in out.decode().splitlines():
        if line.strip():
            ev = parse_event(line)
            if isinstance(ev, BehaviorFact):
                facts.append(ev)
    return DetectorRun(clip, facts)


def _main(argv: list[str]) -> int:
    from atmguard.detectors.pipeline import iter_facts

    clip, atm_id, camera_id, start = argv
    for fact in iter_facts(clip, atm_id=atm_id, camera_id=camera_id, start_time=datetime.fromisoformat(start)):
        sys.stdout.write(fact.to_json() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))

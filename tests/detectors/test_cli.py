"""`atmguard detect` as an operator runs it: JSON lines only on stdout, annotated video, snapshots, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from atmguard.core.contracts import BehaviorFact, parse_event
from tests.conftest import REPO
from tests.detectors.conftest import footage

pytestmark = pytest.mark.slow  # MediaPipe models on real footage

ATMGUARD = [sys.executable, "-m", "atmguard.apps.cli"]


def run(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    code = "from atmguard.apps.cli import main; main()"
    # the multi-person pose bundle (max_people 2, the default) goes to the session's cache folder, not the repo
    cache = {"ATMGUARD_MODEL_CACHE": os.environ["ATMGUARD_MODEL_CACHE"]} if "ATMGUARD_MODEL_CACHE" in os.environ else {}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **cache, **(env or {})})


def test_detect_source_jsonl_prints_only_facts() -> None:
    proc = run("detect", "--source", str(footage("a_suzie_landline_phone_at_ear.mp4")), "--atm-id", "atm-zhez-001",
               "--jsonl", "--start", "2026-02-14T10:00:00+05:00")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines
    facts = [parse_event(json.loads(line)) for line in lines]  # every line is one JSON object of the contract
    assert all(isinstance(f, BehaviorFact) for f in facts)
    assert {f.camera_id for f in facts} == {"atm-zhez-001-cam"}
    phone = [f for f in facts if f.behavior == "on_phone"]
    assert phone and phone[0].started_at.isoformat() == "2026-02-14T10:00:00+05:00"


def test_detect_camera_from_config_with_annotation_and_snapshots(tmp_path: Path) -> None:
    cams = tmp_path / "configs"
    cams.mkdir()
    (cams / "cameras.yaml").write_text(
        "cameras:\n"
        "  - camera_id: cam-zhez-002-front\n"
        "    atm_id: atm-zhez-002\n"
        f"    source: {footage('b_intel_headpose_female_turns.gif')}\n"
        "    analysis_fps: 12.5\n"
    )
    out = tmp_path / "annotated.mp4"
    proc = run("detect", "--camera", "cam-zhez-002-front", "--config", str(cams), "--jsonl",
               "--annotate", str(out), "--snapshots", str(tmp_path / "snaps"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    facts = [BehaviorFact.model_validate_json(line) for line in proc.stdout.splitlines()]
    looking = [f for f in facts if f.behavior == "looking_around" and not f.ended]
    assert looking and looking[0].atm_id == "atm-zhez-002"
    snap = looking[0].snapshot
    assert snap and Path(snap).exists() and cv2.imread(snap) is not None
    cap = cv2.VideoCapture(str(out))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape[:2] == (270, 480) and n >= 15


def test_detect_max_people_follows_the_person_in_the_zone(tmp_path: Path) -> None:
    # a woman (left) and a man (right); the zone is her side: the single-person model follows the man
    args = ("detect", "--source", str(footage("b_intel_headpose_roll_pair.gif")), "--atm-id", "atm-zhez-003",
            "--zone", "0,150 240,150 240,270 0,270", "--jsonl")
    env = {"ATMGUARD_MODEL_CACHE": str(tmp_path / "models")}
    single = run(*args, "--max-people", "1", env=env)
    multi = run(*args, env=env)  # max_people 2, the default
    assert single.returncode == 0 and multi.returncode == 0, (single.stderr[-2000:], multi.stderr[-2000:])
    assert not single.stdout.strip()
    facts = [BehaviorFact.model_validate_json(line) for line in multi.stdout.splitlines()]
    assert any(f.behavior == "present" for f in facts)
    assert list((tmp_path / "models").glob("pose_landmarker_full-*.task"))  # the bundle went where it was told
    bad = run(*args, "--max-people", "0", env=env)
    assert bad.returncode == 2 and "--max-people" in bad.stderr


def test_detect_errors_say_what_is_wrong() -> None:
    proc = run("detect", "--camera", "cam-nope")
    assert proc.returncode == 2 and "cam-nope" in proc.stderr and "cam-zhez-001-front" in proc.stderr
    assert proc.stdout == ""
    proc = run("detect", "--source", "missing.mp4", "--atm-id", "atm-zhez-001", "--jsonl")
    assert proc.returncode == 2 and "video not found: missing.mp4" in proc.stderr
    proc = run("detect", "--source", "missing.mp4")
    assert proc.returncode == 2 and "--atm-id" in proc.stderr


def test_detect_publishes_facts_to_the_broker(tmp_path: Path) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer

    from atmguard.core.settings import Settings
    from atmguard.kafka.broker import EmbeddedBroker

    with EmbeddedBroker(port=0, data_dir=tmp_path / "broker") as broker:
        proc = run("detect", "--source", str(footage("b_intel_headpose_female_turns.gif")), "--atm-id", "atm-zhez-002",
                   "--fps", "12.5", "--broker", broker.url, "--jsonl")
        assert proc.returncode == 0, proc.stderr[-2000:]
        printed = [BehaviorFact.model_validate_json(line) for line in proc.stdout.splitlines()]
        assert any(f.behavior == "looking_around" for f in printed)

        async def consume() -> list[tuple[bytes, bytes]]:
            consumer = AIOKafkaConsumer(Settings().topic_facts, bootstrap_servers=broker.bootstrap,
                                        auto_offset_reset="earliest", group_id=None)
            await consumer.start()
            got: list[tuple[bytes, bytes]] = []
            try:
                while len(got) < len(printed):
                    batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 20)
                    for records in batch.values():
                        got += [(r.key, r.value) for r in records]
            finally:
                await consumer.stop()
            return got

        records = asyncio.run(consume())
    assert {k for k, _ in records} == {b"atm-zhez-002"}  # keyed by ATM
    assert sorted(BehaviorFact.model_validate_json(v).id for _, v in records) == sorted(f.id for f in printed)


def _jpeg_parts(stream: httpx.Response, boundary: str, want: int) -> list[bytes]:
    """The first `want` JPEGs of a multipart/x-mixed-replace body (each part has a Content-Length)."""
    buf, parts = b"", []
    for chunk in stream.iter_bytes():
        buf += chunk
        while True:
            start = buf.find(f"--{boundary}\r\n".encode())
            head_end = buf.find(b"\r\n\r\n", start)
            if start < 0 or head_end < 0:
                break
            headers = buf[start:head_end].decode().split("\r\n")[1:]
            fields = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in headers)}
            assert fields["content-type"] == "image/jpeg"
            size = int(fields["content-length"])
            if len(buf) < head_end + 4 + size:
                break
            parts.append(buf[head_end + 4:head_end + 4 + size])
            buf = buf[head_end + 4 + size:]
        if len(parts) >= want:
            return parts[:want]
    return parts


def test_detect_show_without_a_gui_streams_annotated_frames_over_http() -> None:
    # this install's OpenCV is headless (as on a box beside the cameras): --show serves an MJPEG stream
    clip = footage("a_suzie_landline_phone_at_ear.mp4")  # 176x144, 5 s, played at its own rate with --show
    code = "from atmguard.apps.cli import main; main()"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(REPO), "ATMGUARD_MODEL_CACHE": os.environ["ATMGUARD_MODEL_CACHE"]}
    proc = subprocess.Popen([sys.executable, "-c", code, "detect", "--source", str(clip), "--atm-id", "atm-zhez-001",
                             "--jsonl", "--show", "--start", "2026-02-14T10:00:00+05:00"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    err_lines: list[str] = []
    announced = threading.Event()

    def drain() -> None:  # stderr: the URL line, MediaPipe's own log lines
        assert proc.stderr is not None
        for line in proc.stderr:
            err_lines.append(line)
            if line.startswith("showing "):
                announced.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert announced.wait(60), "".join(err_lines)[-2000:]
        line = next(x for x in err_lines if x.startswith("showing "))
        m = re.fullmatch(r"showing atm-zhez-001-cam at (http://127\.0\.0\.1:(\d+)/) \(Ctrl-C to stop\)\n", line)
        assert m and int(m.group(2)) > 0, line
        url = m.group(1)
        index = httpx.get(url, timeout=10)
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        assert '<img src="stream.mjpg"' in index.text
        with httpx.stream("GET", url + "stream.mjpg", timeout=30) as stream:
            ctype = stream.headers["content-type"]
            assert ctype.startswith("multipart/x-mixed-replace; boundary=")
            jpegs = _jpeg_parts(stream, ctype.split("boundary=", 1)[1], want=3)
        assert len(jpegs) == 3
        frames = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
        assert all(f is not None and f.shape == (144, 176, 3) for f in frames)  # the annotated frame: source size
        assert httpx.get(url + "nope", timeout=10).status_code == 404
    finally:
        out, _ = proc.communicate(timeout=120)
        reader.join(timeout=10)
    assert proc.returncode == 0, "".join(err_lines)[-2000:]
    # stdout stayed pure JSON lines of facts: the URL went to stderr
    facts = [BehaviorFact.model_validate_json(x) for x in out.splitlines()]
    assert any(f.behavior == "on_phone" for f in facts)
    # annotated, not the raw video: each streamed frame is further from every source frame than JPEG alone makes it
    cap = cv2.VideoCapture(str(clip))
    raw = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        raw.append(img.astype(np.int16))
    cap.release()
    noise = max(float(np.abs(cv2.imdecode(cv2.imencode(".jpg", r.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 80])[1],
                                          cv2.IMREAD_COLOR).astype(np.int16) - r).mean()) for r in raw)
    for f in frames:
        nearest = min(float(np.abs(f.astype(np.int16) - r).mean()) for r in raw)
        assert nearest > 2 * noise, (nearest, noise)

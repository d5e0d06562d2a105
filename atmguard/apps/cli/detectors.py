"""Commands of the detectors part, registered on the main `atmguard` app."""

from __future__ import annotations

import contextlib
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import typer


def _parse_zone(text: str) -> list[tuple[float, float]]:
    try:
        pts = [tuple(float(v) for v in p.split(",")) for p in text.replace(";", " ").split()]
    except ValueError:
        raise typer.BadParameter("zone is 'x,y x,y x,y ...' in frame pixels") from None
    if len(pts) < 3 or any(len(p) != 2 for p in pts):
        raise typer.BadParameter("zone is at least 3 points 'x,y x,y x,y ...' in frame pixels")
    return [(p[0], p[1]) for p in pts]


def _fail(message: str) -> NoReturn:
    typer.echo(f"atmguard detect: {message}", err=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add this part's commands to the CLI."""

    @app.command("detect")
    def detect(
        camera: list[str] = typer.Option([], "--camera", help="Camera id from <config>/cameras.yaml (repeat for several)."),
        source: str | None = typer.Option(None, "--source", help="Video file (any container OpenCV reads, GIF too), rtsp:// or http(s):// URL, or device number."),
        atm_id: str | None = typer.Option(None, "--atm-id", help="ATM the camera watches (with --source)."),
        camera_id: str | None = typer.Option(None, "--camera-id", help="Camera id for the facts (default: <atm-id>-cam)."),
        config: Path | None = typer.Option(None, "--config", help="Config folder holding cameras.yaml (default: ATMGUARD_CONFIG_DIR or ./configs)."),
        jsonl: bool = typer.Option(False, "--jsonl", help="Print facts as JSON lines, and nothing else, on stdout."),
        show: bool = typer.Option(False, "--show", help="Show the annotated video: a window when OpenCV has a GUI and there is a display, else an MJPEG stream on http://127.0.0.1:PORT/ (the URL is printed on stderr). A file plays at its own rate."),
        show_port: int = typer.Option(0, "--show-port", min=0, max=65535, help="Port of the --show stream on 127.0.0.1 (default 0: a free port, printed)."),
        annotate: Path | None = typer.Option(None, "--annotate", help="Write the annotated video to this file (e.g. out.mp4)."),
        broker: str | None = typer.Option(None, "--broker", help="Publish facts to this Kafka broker (kafka://host:port); default ATMGUARD_BROKER."),
        fps: float | None = typer.Option(None, "--fps", help="Frames analysed per second (default: the camera's analysis_fps, 5)."),
        start: datetime | None = typer.Option(None, "--start", help="Time of the file's first frame, e.g. 2026-02-14T10:00:00+05:00 (default: now)."),
        zone: str | None = typer.Option(None, "--zone", help="ATM zone polygon 'x,y x,y x,y ...' in frame pixels (default: whole frame)."),
        on_phone_after: float | None = typer.Option(None, "--on-phone-after", help="Seconds of hand at the ear before on_phone (default 3)."),
        max_people: int | None = typer.Option(None, "--max-people", min=1, max=6, help="People looked for (default: the camera's max_people, 2: everyone found about once a second, the one in the zone followed; 1 = the single-person model only)."),
        snapshots: Path | None = typer.Option(None, "--snapshots", help="Save a JPEG per on_phone/looking_around fact in this folder."),
        processes: int = typer.Option(1, "--processes", min=1, help="Worker processes for several cameras (one per core)."),
        realtime: bool = typer.Option(False, "--realtime", help="Play a file at its own rate, as a live camera would."),
        metrics_port: int | None = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics on this port."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress to stderr."),
    ) -> None:
        """Run the behaviour detectors on a camera or a video and print or publish behaviour facts."""
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        from atmguard.core.errors import ConfigError
        from atmguard.core.settings import get_settings
        from atmguard.detectors.config import CameraConfig, load_cameras

        settings = get_settings()
        if start is not None and start.tzinfo is None:
            _fail("--start needs a time zone, e.g. 2026-02-14T10:00:00+05:00")
        cfgs: list[CameraConfig] = []
        if camera:
            try:
                known = load_cameras(config or settings.config_dir)
            except ConfigError as exc:
                _fail(str(exc))
            base = Path(config or settings.config_dir).resolve().parent
            for cid in camera:
                if cid not in known:
                    _fail(f"camera {cid!r} is not in {(config or settings.config_dir) / 'cameras.yaml'} "
                          f"(known: {', '.join(sorted(known)) or 'none'})")
                cam = known[cid]
                # a relative file path works from the current folder, or from the config folder's parent (the repo)
                if cam.source and not Path(cam.source).is_absolute() and not Path(cam.source).exists() \
                        and (base / cam.source).exists():
                    cam = cam.model_copy(update={"source": str(base / cam.source)})
                cfgs.append(cam)
            if source is not None:
                if len(cfgs) > 1:
                    _fail("--source replaces one camera's source: give a single --camera")
                cfgs[0] = cfgs[0].model_copy(update={"source": source})
            if atm_id:
                cfgs = [c.model_copy(update={"atm_id": atm_id}) for c in cfgs]
        elif source is not None:
            if not atm_id:
                _fail("--source needs --atm-id (or use --camera ID from cameras.yaml)")
            cfgs.append(CameraConfig(camera_id=camera_id or f"{atm_id}-cam", atm_id=atm_id, source=source))
        else:
            _fail("give --camera ID (from cameras.yaml) or --source VIDEO --atm-id ID")
        updates: dict[str, object] = {}
        if fps is not None:
            updates["analysis_fps"] = fps
        if zone is not None:
            updates["zone"] = _parse_zone(zone)
        if max_people is not None:
            updates["max_people"] = max_people
        if camera_id and camera:
            updates["camera_id"] = camera_id
        new: list[CameraConfig] = []
        for c in cfgs:
            c = c.model_copy(update=updates)
            if on_phone_after is not None:
                c = c.model_copy(update={"thresholds": c.thresholds.model_copy(update={"on_phone_after_s": on_phone_after})})
            if snapshots is not None:
                c = c.model_copy(update={"snapshots": c.snapshots.model_copy(update={"dir": snapshots})})
            new.append(CameraConfig.model_validate(c.model_dump()))
        cfgs = new
        for c in cfgs:
            if not c.source:
                _fail(f"camera {c.camera_id!r} has no source")
            from atmguard.detectors.sources import _device, is_stream

            if not is_stream(c.source) and _device(c.source) is None and not Path(c.source).exists():
                _fail(f"video not found: {c.source}")
        if metrics_port is not None:
            from prometheus_client import start_http_server

            start_http_server(metrics_port, addr="127.0.0.1")

        from atmguard.detectors.publish import BrokerSink, StdoutSink, Tee

        broker_url = broker or settings.broker
        pub = None
        if broker_url:
            try:
                pub = BrokerSink(broker_url, settings=settings)
            except RuntimeError as exc:
                _fail(str(exc))
        printer = StdoutSink(jsonl=True) if jsonl else (StdoutSink(jsonl=False) if pub is None else None)
        sink = Tee(printer, pub)
        try:
            if len(cfgs) == 1 and not (processes > 1):
                _detect_one(cfgs[0], sink, start=start, show=show, annotate=annotate, realtime=realtime,
                            show_port=show_port)
            else:
                if show or annotate:
                    _fail("--show/--annotate work with one camera at a time")
                from atmguard.detectors.runner import run_cameras

                with contextlib.suppress(KeyboardInterrupt):
                    run_cameras(cfgs, sink, processes=processes)
        finally:
            sink.close()


def _detect_one(cfg: object, sink: object, *, start: datetime | None, show: bool, annotate: Path | None,
                realtime: bool, show_port: int = 0) -> None:
    from atmguard.detectors.annotate import Annotator
    from atmguard.detectors.config import CameraConfig
    from atmguard.detectors.pipeline import iter_results
    from atmguard.detectors.sources import _device, is_stream

    assert isinstance(cfg, CameraConfig)

    def announce(url: str) -> None:
        # stderr: with --jsonl, stdout carries facts only
        typer.echo(f"showing {cfg.camera_id} at {url} (Ctrl-C to stop)", err=True)

    a_file = not is_stream(cfg.source) and _device(cfg.source) is None
    ann = None
    if show or annotate:
        try:
            ann = Annotator(annotate, show=show, fps=cfg.analysis_fps, show_port=show_port, title=cfg.camera_id,
                            announce=announce, pace=show and a_file and not realtime)
        except OSError as exc:
            _fail(f"--show cannot serve on 127.0.0.1:{show_port} ({exc.strerror or exc}); try another --show-port")
    try:
        for res in iter_results(cfg.source, atm_id=cfg.atm_id, camera_id=cfg.camera_id, config=cfg,
                                start_time=start, realtime=realtime, on_result=ann):
            for fact in res.facts:
                sink(fact)  # type: ignore[operator]
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        if ann is not None:
            ann.close()

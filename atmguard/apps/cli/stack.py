"""Commands of the stack: `up`, `worker`, `publish` and `demo`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

BROKER_HELP = "Kafka cluster, kafka://host:9092[,host2:9092]; default: start the embedded broker."


def register(app: typer.Typer) -> None:
    """Add this part's commands to the CLI."""

    @app.command("up")
    def up(
        http_port: int = typer.Option(8080, "--http-port", help="Port for the bank API, console and /metrics."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to serve HTTP on (0.0.0.0 for all)."),
        data_dir: Path = typer.Option(None, "--data-dir", help="Case store, keys, engine state (default ~/.local/share/atmguard)."),
        broker: str = typer.Option(None, "--broker", help=BROKER_HELP),
        rules: Path = typer.Option(None, "--rules", help="Rules folder, watched for changes (default ./rules)."),
        config: Path = typer.Option(None, "--config", help="Deployment configs folder (default ./configs)."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log Faust's and Kafka clients' chatter."),
    ) -> None:
        """Run the whole stack in one process: broker, engine, notifier, bank API and console."""
        from atmguard.apps.up import apply_overrides, configure_logging, run_up

        configure_logging(verbose)
        settings = apply_overrides(
            data_dir=data_dir, broker=broker, rules_dir=rules, config_dir=config, http_port=http_port
        )
        if "public_url" not in settings.model_fields_set:  # console links and Twilio callbacks: this port
            settings = settings.model_copy(update={"public_url": f"http://127.0.0.1:{http_port}"})
        code = asyncio.run(
            run_up(settings, host=host, http_port=http_port, data_dir=settings.data_dir, broker_url=settings.broker)
        )
        raise typer.Exit(code)

    @app.command("worker")
    def worker(
        broker: str = typer.Option(None, "--broker", help="Kafka cluster, kafka://host:9092 (default: ATMGUARD_BROKER "
                                   "or the broker a running `atmguard up` started)."),
        rules: Path = typer.Option(None, "--rules", help="Rules folder, watched for changes (default ./rules)."),
        data_dir: Path = typer.Option(None, "--data-dir", help="Where the worker keeps its local state."),
        http_port: int = typer.Option(0, "--http-port", help="Serve /metrics on this port (0: no HTTP)."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Also log Faust's and Kafka clients' chatter."),
    ) -> None:
        """Run only an engine worker (scale out: start several against one broker)."""
        from atmguard.apps.publish import resolve_broker
        from atmguard.apps.up import apply_overrides, configure_logging
        from atmguard.engine.worker import main_worker

        configure_logging(verbose)
        settings = apply_overrides(data_dir=data_dir, rules_dir=rules)
        url = resolve_broker(settings, broker)
        raise typer.Exit(asyncio.run(main_worker(settings, url, http_port=http_port)))

    @app.command("publish")
    def publish(
        files: list[Path] = typer.Argument(..., help="JSONL files of behaviour facts and bank events.", exists=True,
                                           dir_okay=False, readable=True),
        realtime: bool = typer.Option(False, "--realtime", help="Pace events by their recorded gaps."),
        now: bool = typer.Option(False, "--now", help="Re-stamp times so the first event happens now (gaps kept)."),
        speed: float = typer.Option(1.0, "--speed", min=0.001, help="With --realtime: play this many times faster."),
        fresh_ids: bool = typer.Option(False, "--fresh-ids",
                                       help="Append a run suffix to event ids (the engine skips ids it has seen)."),
        broker: str = typer.Option(None, "--broker", help="Kafka cluster (default: the running stack's broker)."),
    ) -> None:
        """Send recorded events into the running stack's topics, in event-time order."""
        import time

        from atmguard.apps.publish import load, publish_events, resolve_broker
        from atmguard.core.errors import EventError
        from atmguard.core.settings import get_settings
        from atmguard.kafka.publisher import BrokerUnavailable, EventPublisher
        from atmguard.kafka.topics import bootstrap_of

        settings = get_settings()
        try:
            events = load(files, now=now, suffix=f"~{int(time.time())}" if fresh_ids else "")
        except EventError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        url = resolve_broker(settings, broker)

        async def go() -> int:
            publisher = EventPublisher(bootstrap_of(url), settings)
            try:
                await publisher.start(strict=True)
                return await publish_events(publisher, events, realtime=realtime, speed=speed)
            finally:
                await publisher.stop()

        try:
            sent = asyncio.run(go())
        except BrokerUnavailable as exc:
            typer.echo(f"error: {exc} (is `atmguard up` running? or pass --broker)", err=True)
            raise typer.Exit(1) from None
        facts = sum(1 for e in events if e.type == "behavior")
        typer.echo(f"published {sent} events ({facts} behaviour facts, {sent - facts} bank events) to {url}")

    @app.command("demo")
    def demo(
        data_dir: Path = typer.Option(None, "--data-dir", help="Where the demo keeps its data (default: a temp dir)."),
        scenario: Path = typer.Option(None, "--scenario", help="Scenario folder (default examples/zhezkazgan)."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the stack's logs too."),
        no_detectors: bool = typer.Option(False, "--no-detectors",
                                          help="Skip running the detectors on the real footage clip."),
    ) -> None:
        """Run the bundled Zhezkazgan scenario end to end on the embedded stack and print its timeline."""
        from atmguard.apps.demo.scenario import main_demo

        raise typer.Exit(main_demo(data_dir=data_dir, scenario=scenario, verbose=verbose, detectors=not no_detectors))

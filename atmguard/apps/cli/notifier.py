"""Commands of the notifier part, registered on the main `atmguard` app."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this part's commands to the CLI."""

    @app.command("twilio-sink")
    def twilio_sink(
        port: int = typer.Option(8089, "--port", help="Port to listen on (0 = any free port)."),
        host: str = typer.Option("127.0.0.1", "--host"),
        inbound_url: str = typer.Option(
            "", "--inbound-url", help="Where officers' replies go (default: $ATMGUARD_PUBLIC_URL/twilio/sms)."
        ),
        auto_status: bool = typer.Option(True, "--auto-status/--no-auto-status", help="Play sent/delivered callbacks."),
    ) -> None:
        """Run a local Twilio-compatible server; point ATMGUARD_TWILIO_BASE_URL at it."""
        import time

        from atmguard.apps.twilio_sink import TwilioSink
        from atmguard.core.settings import get_settings

        settings = get_settings()
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
        kwargs = {"account_sid": settings.twilio_account_sid} if settings.twilio_account_sid else {}
        sink = TwilioSink(
            host=host,
            port=port,
            inbound_url=inbound_url or f"{settings.public_url.rstrip('/')}/twilio/sms",
            number=settings.twilio_from,
            auto_status=auto_status,
            **({"auth_token": token} if token else {}),
            **kwargs,
        ).start()
        typer.echo(f"twilio-sink listening on {sink.base_url}")
        typer.echo(f"  export ATMGUARD_TWILIO_BASE_URL={sink.base_url}")
        typer.echo(f"  see what was sent:  curl {sink.base_url}/_sink/requests")
        typer.echo(f"  reply as an officer: curl -d From=+77015550101 --data-urlencode 'Body=OK CODE' {sink.base_url}/_sink/inbound")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            sink.stop()

    notify = typer.Typer(help="Notifier: check the deployment config, acknowledge interventions.", no_args_is_help=True)
    app.add_typer(notify, name="notify")

    @notify.command("check")
    def check(config_dir: Path = typer.Option(None, "--config-dir", help="Folder with deployment.yaml (default: settings).")) -> None:
        """Validate configs/deployment.yaml (E.164 numbers, references) and summarise it."""
        from atmguard.core.errors import ConfigError
        from atmguard.core.settings import get_settings
        from atmguard.notifier.config import load_deployment

        try:
            cfg = load_deployment(config_dir or get_settings().config_dir)
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(
            f"ok: {len(cfg.atms)} ATMs in {len({a.district for a in cfg.atms})} districts, {len(cfg.people)} people, "
            f"{len(cfg.groups)} groups, {len(cfg.radio)} radio channels, {len(cfg.webhooks)} webhook receivers, "
            f"{len(cfg.escalation.steps)} escalation steps"
        )

    @notify.command("ack")
    def ack(
        intervention_id: str = typer.Argument(..., help="The intervention id (iv-...)."),
        by: str = typer.Option("", "--by", help="Who acknowledges (default: your user name)."),
        via: str = typer.Option("cli", "--via"),
    ) -> None:
        """Acknowledge an intervention in the database (stops its escalation)."""
        import asyncio
        import getpass

        from atmguard.core.settings import get_settings
        from atmguard.notifier.config import load_deployment
        from atmguard.notifier.service import NotifierService

        settings = get_settings()
        if not settings.twilio_base_url and not settings.twilio_auth_token:
            settings = settings.model_copy(update={"twilio_base_url": "http://127.0.0.1:0"})  # no sending from here
        service = NotifierService(settings, load_deployment(settings.config_dir), settings.resolved_database_url(), tick_s=None)
        service.open()
        done = asyncio.run(service.acknowledge(intervention_id, by or getpass.getuser(), via))
        st = service.status(intervention_id)
        if st is None:
            typer.echo(f"unknown intervention {intervention_id}", err=True)
            raise typer.Exit(1)
        typer.echo(f"{intervention_id}: {'acknowledged' if done else 'not changed'} (state {st.state})")

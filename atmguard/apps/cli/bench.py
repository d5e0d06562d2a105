"""`atmguard bench ...`: thin entry points to the harnesses in `benchmarks/` (outside the package).

The harnesses are not the product: they live beside it in the source checkout and are not in
the wheel. These commands find them there (an editable install or a run from the checkout);
elsewhere they say where to get them.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import typer

bench_app = typer.Typer(help="Benchmarks: speed and memory, as ratios against a baseline in the same run.",
                        no_args_is_help=True)


def harness(name: str) -> ModuleType:
    """The module `benchmarks.<name>`, from the source checkout this package was installed from."""
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "benchmarks" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        return importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("benchmarks", f"benchmarks.{name}"):
            raise
        typer.echo("the benchmarks live in the source checkout (benchmarks/), not in the installed package: "
                   "run `atmguard bench` from an install of the checkout (`make venv`)", err=True)
        raise typer.Exit(2) from None


@bench_app.command("rules")
def bench_rules(
    events: int = typer.Option(100_000, "--events", help="Events to replay for throughput."),
    atms: int = typer.Option(10_000, "--atms", help="ATMs active at once."),
    rules_dir: Path = typer.Option(Path("rules"), "--rules", help="Rule pack (else a generated pack)."),
    memory_events: int = typer.Option(200_000, "--memory-events", help="Events for RSS runs (0: skip; 1000000 for 1M)."),
    ten_million: bool = typer.Option(False, "--ten-million", help="Also replay 10M events for peak RSS (long)."),
    reloads: int = typer.Option(100, "--reloads", help="Reloads with live state (0: skip)."),
) -> None:
    """Replay throughput vs durable_rules, peak RSS over long replays, reload time with live state."""
    harness("rules").bench_rules(events=events, atms=atms, rules_dir=rules_dir, memory_events=memory_events,
                                 ten_million=ten_million, reloads=reloads)


@bench_app.command("engine")
def bench_engine(
    atms: int = typer.Option(1000, "--atms", help="ATMs sending facts."),
    fact_rate: float = typer.Option(2.0, "--fact-rate", help="Facts per second per ATM."),
    bank_rate: float = typer.Option(50.0, "--bank-rate", help="Bank events per second."),
    seconds: float = typer.Option(20.0, "--seconds", help="Measured duration of each run."),
    workers: str = typer.Option("1,2", "--workers", help="Worker counts to compare (throughput runs)."),
    out: Path = typer.Option(None, "--out", help="Also write the report (markdown) here."),
) -> None:
    """Latency bank event -> intervention, lag, and throughput from one worker to two, on the embedded broker."""
    run_bench = harness("engine").run_bench

    report = run_bench(atms=atms, fact_rate=fact_rate, bank_rate=bank_rate, seconds=seconds,
                       workers=[int(w) for w in workers.split(",") if w.strip()])
    sys.stdout.write(report + "\n")
    if out is not None:
        out.write_text(report + "\n", encoding="utf-8")


@bench_app.command("detectors")
def bench_detectors(
    seconds: float = typer.Option(12.0, "--seconds", help="Length of each real-time load run."),
    fps: float = typer.Option(5.0, "--fps", help="Analysed frames per second per camera."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the figures as JSON here."),
    footage: Path | None = typer.Option(None, "--footage", help="Folder of the real footage (default ../shared/footage)."),
    max_people: int | None = typer.Option(None, "--max-people", min=1, max=6, help="Every simulated camera's max_people (default: the cameras' default, 2; 1 = single-person pose only)."),
) -> None:
    """Detector overhead vs inference, gating (5 busy / 25 cameras on one core), frame->fact lag, 2-process scaling."""
    run_bench = harness("detectors").run_bench

    run_bench(seconds=seconds, fps=fps, json_out=json_out, footage=footage, max_people=max_people)


@bench_app.command("notifier")
def bench_notifier(
    n: int = typer.Option(500, "--n", help="Interventions to publish."),
    rate: float = typer.Option(50.0, "--rate", help="Interventions per second."),
    config_dir: Path = typer.Option(Path("configs"), "--config-dir"),
    postgres: str = typer.Option(
        "", "--postgres", help="Use this PostgreSQL database (a throwaway schema) instead of SQLite."
    ),
) -> None:
    """Intervention on the topic -> SMS request at the Twilio sink: p50/p99 vs the sink round trip."""
    run = harness("notifier").run

    for line in run(config_dir, n=n, rate=rate, postgres_url=postgres or None):
        typer.echo(line)


@bench_app.command("gateway")
def bench_gateway(
    rates: str = typer.Option("100,250,500,750,1000,1500,2000", "--rates", help="Request rates to try, per second."),
    seconds: float = typer.Option(5.0, "--seconds", help="Duration of each step."),
    atms: int = typer.Option(200, "--atms", help="ATMs the events spread over."),
    out: Path | None = typer.Option(None, "--json", help="Also write the results as JSON here."),
    engine: bool = typer.Option(True, "--engine/--no-engine",
                                help="Run an engine worker on the same broker, as `atmguard up` does."),
    sustain: float = typer.Option(20.0, "--sustain", help="Seconds of the final 500 events/s step (0: skip)."),
) -> None:
    """Signed bank events/s with hold advice against the embedded stack, vs. /healthz in the same run."""
    run_bench = harness("gateway").run_bench

    run_bench([int(r) for r in rates.split(",") if r.strip()], seconds, atms, out, sustain_s=sustain,
              with_engine=engine)

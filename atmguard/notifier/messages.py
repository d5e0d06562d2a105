"""What an officer reads and hears: SMS and radio text from Jinja2 templates (ru, kk, en).

The SMS keeps its essentials (address, time, acknowledgement code, console link) and trims
"what was seen" at word boundaries to stay within the segment budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from twilio.twiml.voice_response import VoiceResponse

from atmguard.core.contracts import BANK_EVENT_TYPES, Intervention
from atmguard.notifier.config import LANGUAGES, Atm
from atmguard.notifier.segments import fit

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        undefined=StrictUndefined,
        autoescape=False,  # plain text for SMS and <Say>; TwiML is escaped by the twilio SDK
        keep_trailing_newline=False,
    )


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class Seen:
    """The evidence in an officer's terms."""

    call_s: float | None = None
    glances: int | None = None
    amount: Decimal | None = None
    currency: str | None = None


def summarize(iv: Intervention) -> Seen:
    """Call duration, glances and money at stake from the intervention's matched events."""
    call_s: float | None = None
    glances: int | None = None
    amount = Decimal(0)
    currency: str | None = None
    seen_bank: set[str] = set()
    for m in iv.matched:
        ev = m.event or {}
        kind = ev.get("type")
        if kind == "behavior":
            behavior = ev.get("behavior")
            if behavior == "on_phone" and ev.get("duration_s") is not None:
                call_s = max(call_s or 0.0, float(ev["duration_s"]))
            elif behavior in ("looking_around", "gaze_away"):
                n = ev.get("count")
                glances = max(glances or 0, int(n) if n is not None else 1)
        elif kind in BANK_EVENT_TYPES and ev.get("amount") is not None and m.event_id not in seen_bank:
            seen_bank.add(m.event_id)
            amount += Decimal(str(ev["amount"]))
            currency = currency or ev.get("currency")
    return Seen(call_s, glances, amount if amount > 0 else None, currency)


def _lang(lang: str) -> str:
    return lang if lang in LANGUAGES else "en"


def duration_text(seconds: float, lang: str) -> str:
    """`250` -> `4 min 10 s` in the recipient's language."""
    total = int(round(seconds))
    return _squash(_env().get_template(f"units.{_lang(lang)}.j2").render(minutes=total // 60, seconds=total % 60))


def money_text(amount: Decimal, currency: str | None) -> str:
    """`400000` -> `400 000 KZT` (space-grouped: how amounts are written in Kazakhstan)."""
    whole = f"{int(amount):,}".replace(",", " ")
    frac = amount - int(amount)
    text = whole + (f"{frac:.2f}"[1:] if frac else "")
    return f"{text} {currency}" if currency else text


def details_text(iv: Intervention, atm: Atm | None, lang: str, *, with_place: bool = True) -> str:
    """What was seen, in one language (the part of an SMS that may be trimmed)."""
    seen = summarize(iv)
    return _squash(
        _env()
        .get_template(f"details.{_lang(lang)}.j2")
        .render(
            place=(atm.place if atm and with_place else None),
            call=duration_text(seen.call_s, lang) if seen.call_s else None,
            glances=seen.glances,
            amount=money_text(seen.amount, seen.currency) if seen.amount else None,
            message=iv.message,
        )
    )


def console_link(public_url: str, intervention_id: str) -> str:
    """The intervention's page in the dispatcher console."""
    return f"{public_url.rstrip('/')}/console/interventions/{intervention_id}"


def render_sms(
    iv: Intervention, atm: Atm | None, lang: str, *, public_url: str, tz: ZoneInfo, max_segments: int = 3
) -> str:
    """The SMS for one recipient, within `max_segments` where the essentials allow."""
    template = _env().get_template(f"sms.{_lang(lang)}.j2")
    base = {
        "time": iv.ts.astimezone(tz).strftime("%H:%M"),
        "address": atm.address if atm else iv.atm_id,
        "atm_id": iv.atm_id,
        "code": iv.short_code,
        "link": console_link(public_url, iv.id),
    }

    def render(details: str) -> str:
        return _squash(template.render(details=details, **base))

    return fit(render, details_text(iv, atm, lang), max_segments)


def render_voice(iv: Intervention, atm: Atm | None, lang: str) -> str:
    """The radio message (spoken, so no link; the code spelled letter by letter)."""
    return _squash(
        _env()
        .get_template(f"voice.{_lang(lang)}.j2")
        .render(
            address=atm.address if atm else iv.atm_id,
            place=atm.place if atm else None,
            details=details_text(iv, atm, lang, with_place=False),
            code_spoken=", ".join(iv.short_code),
        )
    )


def twiml(text: str, *, language: str, voice: str, repeat: int = 2) -> str:
    """TwiML that speaks `text` `repeat` times with a pause between."""
    response = VoiceResponse()
    for i in range(repeat):
        if i:
            response.pause(length=1)
        response.say(text, language=language, voice=voice)
    return str(response)


def render_reply(outcome: str, *, code: str, address: str, language: str) -> str:
    """The answer to an officer's SMS reply (taken, already taken, which code...), on one line."""
    text = _env().get_template(f"reply.{_lang(language)}.j2").render(outcome=outcome, code=code, address=address)
    return " ".join(text.split())

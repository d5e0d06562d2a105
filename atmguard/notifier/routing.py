"""Who gets what: action names (`sms: [patrol]`, `radio: [dispatch]`, `webhook: [cad]`) ->
concrete recipients for one ATM at one time, each with its rendered message."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

from atmguard.core.contracts import Actions, Intervention
from atmguard.notifier.config import DeploymentConfig, Targets
from atmguard.notifier.masking import mask_phone
from atmguard.notifier.messages import console_link, render_sms, render_voice, twiml

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Planned:
    """One notification to create: channel, action name, recipient and its body."""

    channel: str
    target: str
    recipient: str
    address: str
    language: str
    body: str
    error: str | None = None  # set when the action cannot be routed: recorded as a dead letter

    @property
    def address_masked(self) -> str:
        return mask_phone(self.address) if self.address.startswith("+") else self.address


def webhook_payload(iv: Intervention, config: DeploymentConfig, public_url: str) -> str:
    """The JSON a CAD system receives: the intervention, its ATM and the console link."""
    atm = config.atm(iv.atm_id)
    doc = {
        "event": "intervention",
        "intervention": json.loads(iv.to_json()),
        "short_code": iv.short_code,
        "atm": atm.model_dump() if atm else {"id": iv.atm_id},
        "console_url": console_link(public_url, iv.id),
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def plan(
    iv: Intervention,
    config: DeploymentConfig,
    targets: Actions | Targets,
    *,
    when: datetime,
    public_url: str,
) -> list[Planned]:
    """The notifications `targets` ask for at `iv`'s ATM, for the shift on duty at `when`.

    A person reached through two groups gets one SMS; an unknown action name gives a
    planned notification carrying an error, so the miss is visible rather than silent.
    """
    atm = config.atm(iv.atm_id)
    if atm is None:
        log.warning("intervention %s: ATM %r is not in the deployment config", iv.id, iv.atm_id)
    out: list[Planned] = []
    seen: set[tuple[str, str]] = set()

    def add(p: Planned) -> None:
        if (p.channel, p.address) not in seen:
            seen.add((p.channel, p.address))
            out.append(p)

    for group in targets.sms:
        if group not in config.groups:
            add(Planned("sms", group, group, f"group:{group}", "en", "", error=f"unknown recipient group {group!r}"))
            continue
        for pid in config.group_members(group, atm, when):
            person = config.people[pid]
            body = render_sms(
                iv, atm, person.language, public_url=public_url, tz=config.tz, max_segments=config.sms.max_segments
            )
            add(Planned("sms", group, pid, person.phone, person.language, body))
    for name in targets.radio:
        channel = config.radio.get(name)
        if channel is None:
            add(Planned("radio", name, name, f"radio:{name}", "en", "", error=f"unknown radio channel {name!r}"))
            continue
        text = render_voice(iv, atm, channel.text_language)
        body = twiml(text, language=channel.language, voice=channel.voice, repeat=config.voice.repeat)
        add(Planned("radio", name, name, channel.phone, channel.text_language, body))
    for name in targets.webhook:
        receiver = config.webhooks.get(name)
        if receiver is None:
            add(Planned("webhook", name, name, f"webhook:{name}", "en", "", error=f"unknown webhook {name!r}"))
            continue
        add(Planned("webhook", name, name, receiver.url, "en", webhook_payload(iv, config, public_url)))
    return out

"""Deployment config: ATMs, people, recipient groups, radio channels, webhooks, escalation.

Read from `configs/deployment.yaml`. Everything is checked at load (E.164 numbers,
references between sections, shift times) and a bad file stops the load with an error
naming the file, the line and the field, so a dispatcher fixes it before an alert is lost.

Action names in rules (`sms: [patrol]`, `radio: [dispatch]`, `webhook: [cad]`) are the
names of `groups`, `radio` channels and `webhooks` here; a group resolves to the people on
shift in the ATM's district at the intervention's time.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from atmguard.core import yamlpos
from atmguard.core.durations import parse_duration
from atmguard.core.errors import ConfigError, Position

Language = Literal["ru", "kk", "en"]
LANGUAGES: tuple[str, ...] = ("ru", "kk", "en")
Channel = Literal["sms", "radio", "webhook"]
CONFIG_FILE = "deployment.yaml"


class DeploymentConfigError(ConfigError):
    """A deployment config problem at `path`, `line`, in the key path `field` (messages name no column)."""


def e164(value: Any) -> str:
    """Validate one phone number as E.164 (`+` and country code, no spaces)."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a phone number; write it in E.164 form, e.g. \"+77015550101\"")
    text = value.strip()
    hint = "write it in E.164 form: + country code and number, no spaces, e.g. +77015550101"
    if not re.fullmatch(r"\+[1-9]\d{6,14}", text):
        raise ValueError(f"{value!r} is not an E.164 phone number; {hint}")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{value!r} is not an E.164 phone number ({exc}); {hint}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"{value!r} is not a valid phone number for its country code; {hint}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


Phone = Annotated[str, BeforeValidator(e164)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Atm(_Strict):
    """One ATM: where patrols go."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Id used by cameras and banks, e.g. atm-zhez-001.")
    address: str = Field(min_length=3)
    district: str = Field(min_length=1)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    bank: str | None = None
    place: str | None = Field(default=None, description="Landmark officers know, e.g. 'inside Magnum'.")


class Person(_Strict):
    """Someone who receives SMS: patrol officer, dispatch desk, duty supervisor."""

    name: str = Field(min_length=1)
    phone: Phone
    language: Language = "ru"
    role: str | None = None


class Group(_Strict):
    """Recipients of an action name; `districts.<district>.<shift>` beats `members`."""

    description: str = ""
    members: list[str] = Field(default_factory=list, description="People ids used where no district/shift entry applies.")
    districts: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict, description="district -> shift name (or `any`) -> people ids."
    )


class RadioChannel(_Strict):
    """A radio gateway's phone patch: a voice call to it is heard on the channel."""

    phone: Phone
    language: str = Field(default="ru-RU", description="TwiML <Say> language, e.g. ru-RU, en-US.")
    voice: str = Field(default="Polly.Tatyana", description="TwiML <Say> voice.")
    text: Language | None = Field(default=None, description="Template language; default from `language`.")

    @property
    def text_language(self) -> str:
        """Which template the spoken text comes from."""
        if self.text:
            return self.text
        prefix = self.language.split("-")[0].lower()
        return prefix if prefix in LANGUAGES else "en"


class WebhookReceiver(_Strict):
    """A computer-aided-dispatch system (or any receiver) that gets signed JSON."""

    url: str = Field(pattern=r"^https?://")
    secret_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$", description="Environment variable holding the HMAC secret.")
    timeout_s: Seconds = 5.0


class Targets(_Strict):
    """Action names per channel, as in a rule's `actions`."""

    sms: list[str] = Field(default_factory=list)
    radio: list[str] = Field(default_factory=list)
    webhook: list[str] = Field(default_factory=list)


class EscalationStep(Targets):
    """What to notify when still unacknowledged `after` the first notification."""

    after: Seconds


class Escalation(_Strict):
    """Unacknowledged interventions escalate step by step until someone acknowledges."""

    steps: list[EscalationStep] = Field(default_factory=list)
    min_severity: Literal["low", "medium", "high", "critical"] = "low"


class Delivery(_Strict):
    """Retries with exponential backoff, then another channel."""

    max_attempts: int = Field(default=4, ge=1, le=20)
    backoff_s: Seconds = 1.0
    backoff_factor: float = Field(default=2.0, ge=1.0)
    request_timeout_s: Seconds = 10.0
    fallback: dict[Channel, Targets] = Field(default_factory=dict)


class SmsSettings(_Strict):
    sender: Phone | None = Field(default=None, alias="from", description="Sender number; ATMGUARD_TWILIO_FROM wins.")
    max_segments: int = Field(default=3, ge=1, le=10)


class VoiceSettings(_Strict):
    sender: Phone | None = Field(default=None, alias="from")
    repeat: int = Field(default=2, ge=1, le=5, description="Times the message is spoken.")


class DeploymentConfig(_Strict):
    """The whole deployment: who is told what, where, and when."""

    timezone: str = "Asia/Almaty"
    shifts: dict[str, str] = Field(default_factory=lambda: {"day": "08:00-20:00", "night": "20:00-08:00"})
    sms: SmsSettings = Field(default_factory=SmsSettings)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    atms: list[Atm]
    people: dict[str, Person] = Field(default_factory=dict)
    groups: dict[str, Group] = Field(default_factory=dict)
    radio: dict[str, RadioChannel] = Field(default_factory=dict)
    webhooks: dict[str, WebhookReceiver] = Field(default_factory=dict)
    escalation: Escalation = Field(default_factory=Escalation)
    delivery: Delivery = Field(default_factory=Delivery)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like Asia/Almaty") from None
        return value

    @field_validator("shifts")
    @classmethod
    def _shifts(cls, value: dict[str, str]) -> dict[str, str]:
        for name, span in value.items():
            _parse_span(span, name)
        return value

    # -- lookups --------------------------------------------------------------------------

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def atm(self, atm_id: str) -> Atm | None:
        """The ATM with this id, or None."""
        return next((a for a in self.atms if a.id == atm_id), None)

    def shift_at(self, when: datetime) -> str | None:
        """Name of the shift on duty at `when` (local time of the deployment)."""
        local = when.astimezone(self.tz).time()
        for name, span in self.shifts.items():
            start, end = _parse_span(span, name)
            inside = start <= local < end if start < end else (local >= start or local < end)
            if inside:
                return name
        return None

    def group_members(self, group: str, atm: Atm | None, when: datetime) -> list[str]:
        """People ids an action name reaches for this ATM at this time (district + shift)."""
        spec = self.groups.get(group)
        if spec is None:
            return []
        if atm is not None and atm.district in spec.districts:
            by_shift = spec.districts[atm.district]
            shift = self.shift_at(when)
            if shift is not None and by_shift.get(shift):
                return list(by_shift[shift])
            if by_shift.get("any"):
                return list(by_shift["any"])
        return list(spec.members)

    def person_by_phone(self, phone: str) -> tuple[str, Person] | None:
        """The person whose number this is (inbound SMS), or None."""
        for pid, person in self.people.items():
            if person.phone == phone:
                return pid, person
        return None


def _parse_span(span: str, name: str) -> tuple[time, time]:
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", span)
    if not match:
        raise ValueError(f"shift {name!r}: {span!r} is not a time span like 08:00-20:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
        raise ValueError(f"shift {name!r}: {span!r} has an impossible time")
    return time(h1, m1), (time(0, 0) if h2 == 24 else time(h2, m2))


# -- loading ------------------------------------------------------------------------------


def _references(cfg: DeploymentConfig) -> list[tuple[tuple[Any, ...], str]]:
    """Cross-section mistakes: unknown people, districts, shifts, groups, channels."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    ids = [a.id for a in cfg.atms]
    for i, atm_id in enumerate(ids):
        if atm_id in ids[:i]:
            problems.append((("atms", i, "id"), f"ATM id {atm_id!r} appears twice"))
    districts = {a.district for a in cfg.atms}
    shifts = set(cfg.shifts) | {"any"}
    for gname, group in cfg.groups.items():
        for j, pid in enumerate(group.members):
            if pid not in cfg.people:
                problems.append((("groups", gname, "members", j), f"unknown person {pid!r} (not in people)"))
        for district, by_shift in group.districts.items():
            if district not in districts:
                problems.append(
                    (("groups", gname, "districts", district), f"no ATM is in district {district!r}; known: {sorted(districts)}")
                )
            for shift, pids in by_shift.items():
                if shift not in shifts:
                    problems.append(
                        (("groups", gname, "districts", district, shift), f"unknown shift {shift!r}; known: {sorted(shifts)}")
                    )
                for j, pid in enumerate(pids):
                    if pid not in cfg.people:
                        problems.append(
                            (("groups", gname, "districts", district, shift, j), f"unknown person {pid!r} (not in people)")
                        )

    def check_targets(loc: tuple[Any, ...], targets: Targets) -> None:
        for j, name in enumerate(targets.sms):
            if name not in cfg.groups:
                problems.append(((*loc, "sms", j), f"unknown group {name!r}; known: {sorted(cfg.groups)}"))
        for j, name in enumerate(targets.radio):
            if name not in cfg.radio:
                problems.append(((*loc, "radio", j), f"unknown radio channel {name!r}; known: {sorted(cfg.radio)}"))
        for j, name in enumerate(targets.webhook):
            if name not in cfg.webhooks:
                problems.append(((*loc, "webhook", j), f"unknown webhook {name!r}; known: {sorted(cfg.webhooks)}"))

    for i, step in enumerate(cfg.escalation.steps):
        check_targets(("escalation", "steps", i), step)
        if i and step.after <= cfg.escalation.steps[i - 1].after:
            problems.append((("escalation", "steps", i, "after"), "steps must come later than the step before"))
    for channel, targets in cfg.delivery.fallback.items():
        check_targets(("delivery", "fallback", channel), targets)
    return problems


def parse_deployment(text: str, source: str = "<deployment>") -> DeploymentConfig:
    """Parse and validate deployment YAML text; errors name `source`, the line and the field."""
    data = yamlpos.load_yaml(text, source, error=DeploymentConfigError, column=False)
    if not isinstance(data, dict):
        raise DeploymentConfigError("expected a mapping with atms, people, groups, ...", position=Position(source, 1))
    try:
        cfg = DeploymentConfig.model_validate(_plain(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {loc[-1]!r}"
        raise DeploymentConfigError(msg, position=_at(data, loc, source)) from None
    problems = _references(cfg)
    if problems:
        loc, msg = problems[0]
        raise DeploymentConfigError(msg, position=_at(data, loc, source))
    return cfg


def _at(data: Any, loc: tuple[str | int, ...], source: str) -> Position:
    # at the key: the line a dispatcher looks for; the messages name no column
    return yamlpos.locate(data, loc, path=source, at_key=True, column=False)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def load_deployment(config_dir: str | Path) -> DeploymentConfig:
    """Load `<config_dir>/deployment.yaml` (or the file itself when given a file)."""
    path = Path(config_dir)
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.exists():
        raise DeploymentConfigError(f"no deployment config at {path}", path=str(path))
    return parse_deployment(path.read_text(encoding="utf-8"), source=str(path))

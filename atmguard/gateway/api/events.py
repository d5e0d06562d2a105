"""POST /v1/events: signed bank events in, hold advice out, 202 only once the broker has them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from atmguard.core.contracts import BankEvent, parse_event
from atmguard.core.errors import EventError
from atmguard.gateway.api.state import GatewayState
from atmguard.gateway.auth import HEADER_BANK, HEADER_SIGNATURE, HEADER_TIMESTAMP, AuthError, verify

log = logging.getLogger(__name__)
router = APIRouter(tags=["bank events"])


def _error(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _openapi() -> dict[str, Any]:
    event = BankEvent.model_json_schema()
    event.pop("title", None)
    batch = {"type": "array", "items": event, "minItems": 1, "maxItems": 500}
    header = {"type": "string"}
    return {
        "parameters": [
            {"name": HEADER_BANK, "in": "header", "required": True, "schema": header, "description": "Your bank id."},
            {"name": HEADER_TIMESTAMP, "in": "header", "required": True, "schema": header,
             "description": "UNIX seconds when you signed; more than 5 minutes off is refused."},
            {"name": HEADER_SIGNATURE, "in": "header", "required": True, "schema": header,
             "description": 'sha256=HEX, HEX = HMAC-SHA256(your key, TIMESTAMP + "." + RAW_BODY).'},
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"title": "One bank event", **event},
                            {"title": "A batch (array of up to 500)", **batch},
                            {"title": "A batch (object)", "type": "object", "required": ["events"],
                             "properties": {"events": batch}},
                        ]
                    },
                    "examples": {
                        "transfer": {
                            "summary": "A transfer to a new payee at an ATM",
                            "value": {"type": "transfer", "id": "trx-1001", "bank_id": "halyk", "atm_id": "atm-zhez-001",
                                      "ts": "2026-02-14T10:02:00+05:00", "amount": 400000, "currency": "KZT",
                                      "payee_new": True, "status": "initiated"},
                        }
                    },
                }
            },
        },
    }


_ANSWER = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string"},
        "status": {"type": "string", "enum": ["accepted"]},
        "advice": {"type": "string", "enum": ["hold", "allow"]},
        "intervention_id": {"type": "string"},
        "reason": {"type": "string"},
    },
    "required": ["event_id", "status", "advice"],
}
_ERR = {"content": {"application/json": {"schema": {"type": "object", "properties": {
    "error": {"type": "string"}, "field": {"type": ["string", "null"]}}}}}}


@router.post(
    "/v1/events",
    status_code=202,
    summary="Post one bank event or a batch of up to 500; get hold advice",
    description=(
        "Accepted (202) means the event is stored in the broker. The answer says "
        '`{"advice": "hold", "intervention_id": ..., "reason": ...}` when the customer\'s ATM has an open '
        'intervention asking to hold, or when a rule fires on this very event; else `{"advice": "allow"}`. '
        "The same event id posted again gets the same answer and is not published twice. "
        "A batch answers `{\"accepted\": N, \"results\": [answer, ...]}` in request order."
    ),
    openapi_extra=_openapi(),
    responses={
        202: {"description": "Accepted and durable, with advice",
              "content": {"application/json": {"schema": {"oneOf": [_ANSWER, {"type": "object", "properties": {
                  "accepted": {"type": "integer"}, "results": {"type": "array", "items": _ANSWER}}}]}}}},
        400: {"description": "Not JSON", **_ERR},
        401: {"description": "Unknown bank, bad or stale signature, or body bank_id differs from the header", **_ERR},
        413: {"description": "Body too large", **_ERR},
        422: {"description": "A field is invalid; `field` names it", **_ERR},
        429: {"description": "Too many requests for this bank; see Retry-After", **_ERR},
        503: {"description": "Broker unavailable: nothing was accepted; retry after Retry-After", **_ERR},
    },
)
async def post_events(request: Request) -> JSONResponse:
    """Verify, validate, advise, publish, answer."""
    gw: GatewayState = request.app.state.gateway
    limit = gw.config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return _error(413, f"request body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            return _error(413, f"request body larger than {limit} bytes")
    raw = bytes(body)

    bank_id = request.headers.get(HEADER_BANK, "")
    keys = gw.keys.valid_keys(bank_id) if bank_id else []
    if not keys:
        return _error(401, f"unknown bank {bank_id!r}" if bank_id else f"missing {HEADER_BANK} header", HEADER_BANK)
    try:
        verify(keys, request.headers.get(HEADER_TIMESTAMP), request.headers.get(HEADER_SIGNATURE), raw,
               skew_s=gw.config.clock_skew_s)
    except AuthError as exc:
        return _error(401, str(exc), HEADER_SIGNATURE if "signature" in str(exc) else HEADER_TIMESTAMP)

    wait = gw.limiter.take(bank_id)
    if wait > 0:
        return _error(429, f"more than {gw.config.rate_per_s:g} requests per second for bank {bank_id}",
                      headers={"Retry-After": gw.limiter.retry_after(wait)})

    parsed = _parse(raw, gw.config.max_batch)
    if isinstance(parsed, JSONResponse):
        return parsed
    events, batch = parsed
    for i, ev in enumerate(events):
        if ev.bank_id != bank_id:
            where = f"events[{i}].bank_id" if batch else "bank_id"
            return _error(401, f"body bank_id {ev.bank_id!r} differs from {HEADER_BANK} {bank_id!r}", where)

    try:
        answers = await _accept(gw, events)
    except _Unavailable as exc:
        return _error(503, "the event broker is unavailable; nothing was accepted, retry later",
                      headers={"Retry-After": str(exc.retry_after)})
    if batch:
        return JSONResponse({"accepted": len(answers), "results": answers}, status_code=202)
    return JSONResponse(answers[0], status_code=202)


def _parse(raw: bytes, max_batch: int) -> tuple[list[BankEvent], bool] | JSONResponse:
    """The request's events, or the 4xx naming what is wrong."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(400, f"body is not valid JSON: {exc}")
    prefix = ""
    if isinstance(data, dict) and "events" in data and "type" not in data:
        data, prefix = data["events"], "events"
        if not isinstance(data, list):
            return _error(422, "events must be an array of bank events", "events")
    if isinstance(data, list):
        prefix = prefix or ""
        if not data:
            return _error(422, "the batch is empty", prefix or None)
        if len(data) > max_batch:
            return _error(422, f"at most {max_batch} events per request, got {len(data)}", prefix or None)
        items, batch = data, True
    else:
        items, batch = [data], False
    events: list[BankEvent] = []
    for i, item in enumerate(items):
        where = f"{prefix}[{i}]" if batch else ""
        if not isinstance(item, dict):
            return _error(422, "a bank event must be a JSON object", where or None)
        kind = item.get("type")
        if kind == "behavior":
            return _error(422, "the bank API takes bank events: type must be transfer, withdrawal or deposit",
                          f"{where}.type" if where else "type")
        try:
            event = parse_event(item)
        except EventError as exc:
            field = exc.field or "type"
            return _error(422, exc.message, f"{where}.{field}" if where else field)
        except Exception as exc:  # noqa: BLE001 - anything pydantic did not foresee is still the client's input: 422, never 500
            return _error(422, f"invalid bank event: {exc}", where or None)
        if not isinstance(event, BankEvent):
            return _error(422, "type must be transfer, withdrawal or deposit", f"{where}.type" if where else "type")
        events.append(event)
    return events, batch


class _Unavailable(Exception):
    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after


def _broker_errors() -> tuple[type[BaseException], ...]:
    try:
        from atmguard.kafka.publisher import BrokerUnavailable
    except ImportError:  # pragma: no cover - the stream part is always installed with the gateway
        return (ConnectionError, TimeoutError)
    return (BrokerUnavailable, ConnectionError, TimeoutError)


async def _accept(gw: GatewayState, events: list[BankEvent]) -> list[dict[str, Any]]:
    """Answers in request order; new events are published (acked) and their receipts stored."""
    answers: dict[tuple[str, str], dict[str, Any]] = {}
    keys = [(e.bank_id, e.id) for e in events]
    # 1. known answers (memory holds every receipt of the last day, see receipts.py)
    for k in keys:
        if k in gw.receipts:
            answers[k] = gw.receipts[k]
    # 2. wait for the same ids in flight in another request
    for k in dict.fromkeys(keys):
        if k not in answers and k in gw.inflight:
            with contextlib.suppress(Exception):
                answers[k] = await asyncio.shield(gw.inflight[k])
    new: list[BankEvent] = []
    seen: set[tuple[str, str]] = set()
    for e in events:
        k = (e.bank_id, e.id)
        if k not in answers and k not in seen:
            seen.add(k)
            new.append(e)
    if new:
        loop = asyncio.get_running_loop()
        futures = {(e.bank_id, e.id): loop.create_future() for e in new}
        gw.inflight.update(futures)
        try:
            fresh = {(e.bank_id, e.id): {"event_id": e.id, "status": "accepted", **gw.advise(e).as_answer()} for e in new}
            try:
                many = getattr(gw.publisher, "publish_many", None)
                if many is not None and len(new) > 1:
                    await many(new)
                else:
                    for e in new:
                        await gw.publisher.publish(e)
            except _broker_errors() as exc:
                log.warning("broker unavailable, answering 503: %s", exc)
                retry = int(max(1, round(float(getattr(exc, "retry_after", gw.config.retry_after_s)))))
                for f in futures.values():
                    f.set_exception(_Unavailable(retry))
                    f.exception()  # mark retrieved
                raise _Unavailable(retry) from None
            gw.receipt_writer.submit([((e.bank_id, e.id), e.atm_id, fresh[(e.bank_id, e.id)]) for e in new])
            for e in new:
                k = (e.bank_id, e.id)
                gw.remember(k, fresh[k])
                gw.advised.pop(k, None)
                gw.recorder.on_bank_event_accepted(e)
                futures[k].set_result(fresh[k])
            answers.update(fresh)
        finally:
            for k, f in futures.items():
                if gw.inflight.get(k) is f:
                    del gw.inflight[k]
                if not f.done():
                    f.cancel()
    return [answers[k] for k in keys]

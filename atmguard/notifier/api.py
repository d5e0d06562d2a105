"""HTTP endpoints of the notifier.

`create_router(service)` -> Twilio webhooks, mounted at prefix "/twilio":
  POST /status/{notification_id}   message / call status callbacks (MessageStatus, CallStatus)
  POST /sms                        inbound SMS: "OK <CODE>" acknowledges; answered with TwiML
Every request must carry a valid X-Twilio-Signature (HMAC-SHA1 with the auth token over the
URL and the sorted form fields); a bad or missing one gets 403 and changes nothing.

`create_ack_router(service, auth=...)` -> the acknowledgement API, mounted without prefix:
  POST /v1/interventions/{id}/ack  {"by": "...", "via": "console"}
  GET  /v1/interventions/{id}/notifications
guarded by `auth` (default: `Authorization: Bearer $ATMGUARD_NOTIFIER_API_TOKEN`).
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from atmguard.notifier.masking import mask_phone

if TYPE_CHECKING:
    from atmguard.notifier.service import NotifierService

log = logging.getLogger(__name__)
API_TOKEN_ENV = "ATMGUARD_NOTIFIER_API_TOKEN"


async def _signed_form(request: Request, validator: RequestValidator, public_url: str) -> dict[str, str]:
    """The form fields of a request Twilio really sent, or 403."""
    form = await request.form()
    params = {k: str(v) for k, v in form.items()}
    signature = request.headers.get("X-Twilio-Signature", "")
    query = f"?{request.url.query}" if request.url.query else ""
    # Twilio signs the URL it was given (public_url + path); behind a proxy that differs from
    # what this process sees, so both are tried. Either way only the token holder can sign.
    candidates = [f"{public_url}{request.url.path}{query}", str(request.url)]
    if not signature or not any(validator.validate(url, params, signature) for url in candidates):
        log.warning("rejected a Twilio webhook to %s: bad or missing X-Twilio-Signature", request.url.path)
        raise HTTPException(status_code=403, detail="invalid X-Twilio-Signature")
    return params


def create_router(service: NotifierService) -> APIRouter:
    """Twilio's webhooks for this notifier (mount at prefix "/twilio")."""
    router = APIRouter(tags=["twilio"])
    validator = RequestValidator(service.auth_token)

    @router.post("/status/{notification_id}", summary="Twilio message/call status callback")
    async def status_callback(notification_id: int, request: Request) -> Response:
        params = await _signed_form(request, validator, service.public_url)
        status = params.get("MessageStatus") or params.get("CallStatus")
        if not status:
            raise HTTPException(status_code=400, detail="no MessageStatus or CallStatus")
        sid = params.get("MessageSid") or params.get("CallSid")
        known = await run_in_threadpool(
            service.delivery.on_status,
            notification_id,
            sid=sid,
            status=status,
            error_code=params.get("ErrorCode"),
            duration_s=params.get("CallDuration"),
        )
        if not known:
            raise HTTPException(status_code=404, detail="unknown notification")
        service.wake()  # a failure may have queued a retry or a fallback
        return Response(status_code=204)

    @router.post("/sms", summary="Inbound SMS (officers acknowledge with OK <CODE>)")
    async def inbound_sms(request: Request) -> Response:
        params = await _signed_form(request, validator, service.public_url)
        result = await run_in_threadpool(service.inbound_sms, params.get("From", ""), params.get("Body", ""))
        log.info("inbound SMS from %s: %s", mask_phone(params.get("From")), result.outcome)
        twiml = MessagingResponse()
        if result.outcome != "unknown_sender":
            twiml.message(_reply_text(service, result))
        return Response(content=str(twiml), media_type="application/xml")

    return router


def _reply_text(service: NotifierService, result: Any) -> str:
    """The TwiML reply to an officer, in the officer's language."""
    from atmguard.notifier.messages import _env
    from atmguard.notifier.models import NotifiedIntervention

    address = ""
    if result.intervention_id:
        with service.db.read() as s:
            row = s.get(NotifiedIntervention, result.intervention_id)
        if row is not None:
            atm = service.config.atm(row.atm_id)
            address = atm.address if atm else row.atm_id
    lang = result.language if result.language in ("ru", "kk", "en") else "en"
    text = _env().get_template(f"reply.{lang}.j2").render(outcome=result.outcome, code=result.code or "", address=address)
    return " ".join(text.split())


class AckRequest(BaseModel):
    by: str = Field(min_length=1, max_length=200, description="Who acknowledges (console user name).")
    via: str = Field(default="api", max_length=32, description="console | api | radio ...")


class AckResponse(BaseModel):
    intervention_id: str
    acknowledged: bool = Field(description="True when this request acknowledged it.")
    state: str


def require_api_token(authorization: Annotated[str | None, Header()] = None) -> None:
    """Default guard of the ack API: a bearer token from ATMGUARD_NOTIFIER_API_TOKEN."""
    token = os.environ.get(API_TOKEN_ENV)
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not token or not given or not hmac.compare_digest(token, given):
        raise HTTPException(status_code=403, detail=f"send Authorization: Bearer ${API_TOKEN_ENV}")


def create_ack_router(service: NotifierService, auth: Callable[..., Any] = require_api_token) -> APIRouter:
    """Acknowledge from the console or another system; `auth` is a FastAPI dependency."""
    from atmguard.notifier.service import InterventionStatus

    router = APIRouter(tags=["notifier"], dependencies=[Depends(auth)])

    @router.post("/v1/interventions/{intervention_id}/ack", response_model=AckResponse)
    async def ack(intervention_id: str, body: AckRequest) -> AckResponse:
        acknowledged = await run_in_threadpool(service.acknowledge_sync, intervention_id, body.by, body.via)
        st = await run_in_threadpool(service.status, intervention_id)
        if st is None:
            raise HTTPException(status_code=404, detail="unknown intervention")
        return AckResponse(intervention_id=intervention_id, acknowledged=acknowledged, state=st.state)

    @router.get("/v1/interventions/{intervention_id}/notifications", response_model=InterventionStatus)
    async def notifications(intervention_id: str) -> Any:
        st = await run_in_threadpool(service.status, intervention_id)
        if st is None:
            raise HTTPException(status_code=404, detail="unknown intervention")
        return st

    return router

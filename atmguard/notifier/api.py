"""HTTP endpoints of the notifier: two routers that find the service through a FastAPI dependency.

`twilio_router` -> Twilio webhooks, mounted at prefix "/twilio":
  POST /status/{notification_id}   message / call status callbacks (MessageStatus, CallStatus)
  POST /sms                        inbound SMS: "OK <CODE>" acknowledges; answered with TwiML
Every request must carry a valid X-Twilio-Signature (HMAC-SHA1 with the auth token over the
URL and the sorted form fields); a bad or missing one gets 403 and changes nothing.

`ack_router` -> the acknowledgement API, mounted without prefix:
  POST /v1/interventions/{id}/ack  {"by": "...", "via": "console"}
  GET  /v1/interventions/{id}/notifications
guarded by `require_api_token` (`Authorization: Bearer $ATMGUARD_NOTIFIER_API_TOKEN`, read when
the routers are mounted; an app may swap the guard through `app.dependency_overrides`).

`include_notifier(app, service)` mounts both and puts the service on `app.state.notifier`,
where `get_notifier` (the `NotifierDep` of every endpoint) finds it.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response
from pydantic import BaseModel, Field, SecretStr
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from atmguard.core.settings import NotifierSettings
from atmguard.notifier.masking import mask_phone
from atmguard.notifier.service import NotifierService
from atmguard.notifier.views import InterventionStatus

log = logging.getLogger(__name__)
API_TOKEN_ENV = "ATMGUARD_NOTIFIER_API_TOKEN"


def get_notifier(request: Request) -> NotifierService:
    """The service behind this app's notifier endpoints (set by `include_notifier`)."""
    service = getattr(request.app.state, "notifier", None)
    if not isinstance(service, NotifierService):
        # An assembly mistake, not a client's: fail loudly rather than answer 4xx.
        raise RuntimeError("no NotifierService on app.state.notifier: mount the routers with include_notifier()")
    return service


NotifierDep = Annotated[NotifierService, Depends(get_notifier)]


def include_notifier(app: FastAPI, service: NotifierService, *, ack_api: bool = True) -> None:
    """Serve `service`'s Twilio webhooks at /twilio and (with `ack_api`) its acknowledgement API on `app`."""
    app.state.notifier = service
    app.include_router(twilio_router, prefix="/twilio")
    if ack_api:
        # Read once here, not per request: a running process's environment does not change.
        app.state.notifier_api_token = NotifierSettings().api_token
        app.include_router(ack_router)


async def _signed_form(request: Request, service: NotifierService) -> dict[str, str]:
    """The form fields of a request Twilio really sent, or 403."""
    form = await request.form()
    params = {k: str(v) for k, v in form.items()}
    signature = request.headers.get("X-Twilio-Signature", "")
    query = f"?{request.url.query}" if request.url.query else ""
    # Twilio signs the URL it was given (public_url + path); behind a proxy that differs from
    # what this process sees, so both are tried. Either way only the token holder can sign.
    candidates = [f"{service.public_url}{request.url.path}{query}", str(request.url)]
    validator = RequestValidator(service.auth_token)
    if not signature or not any(validator.validate(url, params, signature) for url in candidates):
        log.warning("rejected a Twilio webhook to %s: bad or missing X-Twilio-Signature", request.url.path)
        raise HTTPException(status_code=403, detail="invalid X-Twilio-Signature")
    return params


twilio_router = APIRouter(tags=["twilio"])
"""Twilio's webhooks (mount at prefix "/twilio")."""


@twilio_router.post("/status/{notification_id}", summary="Twilio message/call status callback")
async def status_callback(notification_id: int, request: Request, service: NotifierDep) -> Response:
    # Checked here, not in a dependency: FastAPI solves dependencies before it validates the
    # path, and a malformed notification id stays a 422 whatever the signature.
    params = await _signed_form(request, service)
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


@twilio_router.post("/sms", summary="Inbound SMS (officers acknowledge with OK <CODE>)")
async def inbound_sms(request: Request, service: NotifierDep) -> Response:
    params = await _signed_form(request, service)
    result = await run_in_threadpool(service.inbound_sms, params.get("From", ""), params.get("Body", ""))
    log.info("inbound SMS from %s: %s", mask_phone(params.get("From")), result.outcome)
    twiml = MessagingResponse()
    if result.outcome != "unknown_sender":
        twiml.message(service.reply_text(result))
    return Response(content=str(twiml), media_type="application/xml")


class AckRequest(BaseModel):
    by: str = Field(min_length=1, max_length=200, description="Who acknowledges (console user name).")
    via: str = Field(default="api", max_length=32, description="console | api | radio ...")


class AckResponse(BaseModel):
    intervention_id: str
    acknowledged: bool = Field(description="True when this request acknowledged it.")
    state: str


def require_api_token(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Guard of the ack API: a bearer token from ATMGUARD_NOTIFIER_API_TOKEN (no token set: all refused)."""
    configured: SecretStr | None = getattr(request.app.state, "notifier_api_token", None)
    token = configured.get_secret_value() if configured is not None else None
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not token or not given or not hmac.compare_digest(token, given):
        raise HTTPException(status_code=403, detail=f"send Authorization: Bearer ${API_TOKEN_ENV}")


ack_router = APIRouter(tags=["notifier"], dependencies=[Depends(require_api_token)])
"""Acknowledge from the console or another system (mount without prefix)."""


@ack_router.post("/v1/interventions/{intervention_id}/ack", response_model=AckResponse)
async def ack(intervention_id: str, body: AckRequest, service: NotifierDep) -> AckResponse:
    acknowledged = await run_in_threadpool(service.acknowledge_sync, intervention_id, body.by, body.via)
    st = await run_in_threadpool(service.status, intervention_id)
    if st is None:
        raise HTTPException(status_code=404, detail="unknown intervention")
    return AckResponse(intervention_id=intervention_id, acknowledged=acknowledged, state=st.state)


@ack_router.get("/v1/interventions/{intervention_id}/notifications", response_model=InterventionStatus)
async def notifications(intervention_id: str, service: NotifierDep) -> InterventionStatus:
    st = await run_in_threadpool(service.status, intervention_id)
    if st is None:
        raise HTTPException(status_code=404, detail="unknown intervention")
    return st

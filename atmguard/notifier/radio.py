"""Radio dispatch: a Twilio voice call to a radio gateway's phone patch speaking TwiML <Say>.

The call's progress (initiated, ringing, answered, completed / busy / no-answer / failed)
comes back through status callbacks and is recorded on the notification.
"""

from __future__ import annotations

from twilio.rest import Client

from atmguard.notifier.outcome import DeliveryError, Outgoing, SendResult, from_twilio

CALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


class RadioChannel:
    """`send` places one call whose TwiML (in the notification body) speaks the message."""

    name = "radio"

    def __init__(self, client: Client, sender: str | None, *, ring_timeout_s: int = 30) -> None:
        self.client = client
        self.sender = sender
        self.ring_timeout_s = ring_timeout_s

    def send(self, out: Outgoing) -> SendResult:
        if not self.sender:
            raise DeliveryError("no voice caller number: set voice.from in deployment.yaml or ATMGUARD_TWILIO_FROM", transient=False)
        try:
            call = self.client.calls.create(
                to=out.address,
                from_=self.sender,
                twiml=out.body,
                status_callback=out.status_callback,
                status_callback_event=CALL_EVENTS,
                status_callback_method="POST",
                timeout=self.ring_timeout_s,
            )
        except Exception as exc:  # noqa: BLE001 - any SDK or transport error becomes a DeliveryError (retry or not)
            raise from_twilio(exc) from None
        return SendResult(call.sid, call.status or "queued")

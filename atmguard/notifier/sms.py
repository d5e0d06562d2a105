"""SMS through Twilio Programmable Messaging (the real SDK; the local sink in the demo)."""

from __future__ import annotations

from twilio.rest import Client

from atmguard.notifier.outcome import DeliveryError, Outgoing, SendResult, from_twilio


class SmsChannel:
    """`send` creates one Message with a status callback to our webhook."""

    name = "sms"

    def __init__(self, client: Client, sender: str | None) -> None:
        self.client = client
        self.sender = sender

    def send(self, out: Outgoing) -> SendResult:
        if not self.sender:
            raise DeliveryError("no SMS sender number: set sms.from in deployment.yaml or ATMGUARD_TWILIO_FROM", transient=False)
        try:
            msg = self.client.messages.create(
                to=out.address, from_=self.sender, body=out.body, status_callback=out.status_callback
            )
        except Exception as exc:  # noqa: BLE001 - any SDK or transport error becomes a DeliveryError (retry or not)
            raise from_twilio(exc) from None
        return SendResult(msg.sid, msg.status or "queued")

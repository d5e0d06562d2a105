"""A local Twilio-compatible REST server for the demo and the tests.

It answers the calls the twilio SDK makes for Programmable Messaging and Voice
(`POST/GET /2010-04-01/Accounts/{sid}/Messages.json`, `Calls.json`, and `.../{Sid}.json`)
with JSON shaped like Twilio's, checks HTTP basic auth, records every request, and can
play back what Twilio would send to us: status callbacks and inbound SMS, signed with the
auth token exactly like Twilio (X-Twilio-Signature). Faults (500s, slow answers that time
the client out) can be injected for the next N requests.

Control endpoints for people running the demo: `GET /_sink/requests` (JSON),
`POST /_sink/inbound` (From, Body: play an officer's reply), `POST /_sink/status` (Sid, Status).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

import httpx
from twilio.request_validator import RequestValidator

from atmguard.core.local_http import ThreadedServer
from atmguard.notifier.masking import mask_phone
from atmguard.notifier.twilio_client import SINK_ACCOUNT_SID, SINK_AUTH_TOKEN

log = logging.getLogger(__name__)

API = "2010-04-01"
Kind = Literal["message", "call"]
_PATH = re.compile(rf"^/{API}/Accounts/(?P<account>AC[0-9a-zA-Z]+)/(?P<res>Messages|Calls)(?:/(?P<sid>[A-Z]{{2}}[0-9a-f]{{32}}))?\.json$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass
class SinkRequest:
    """One REST call the sink received (accepted or not)."""

    kind: Kind
    method: str
    path: str
    params: dict[str, list[str]]
    status_code: int
    sid: str | None
    received_at: float  # time.perf_counter(), for latency measurements in the same process
    received_wall: datetime
    fault: str | None = None
    status: str | None = None  # current message/call status, for accepted requests
    callbacks: list[dict[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        """First value of form field `name` (To, From, Body, Twiml, StatusCallback, ...)."""
        values = self.params.get(name)
        return values[0] if values else None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    @property
    def data(self) -> dict[str, str]:
        """The form fields with their first values."""
        return {k: v[0] for k, v in self.params.items() if v}

    @property
    def accepted(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def to(self) -> str | None:
        return self.get("To")

    @property
    def from_(self) -> str | None:
        return self.get("From")

    @property
    def body(self) -> str | None:
        return self.get("Body")

    @property
    def twiml(self) -> str | None:
        return self.get("Twiml")

    @property
    def status_callback(self) -> str | None:
        return self.get("StatusCallback")


@dataclass
class _Fault:
    kind: Kind | None
    remaining: int
    status: int = 500
    delay_s: float = 0.0


class TwilioSink:
    """Twilio-compatible REST server in a background thread (`start()`/`stop()`, or `with`)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        account_sid: str = SINK_ACCOUNT_SID,
        auth_token: str = SINK_AUTH_TOKEN,
        inbound_url: str | None = None,
        number: str | None = None,
        auto_status: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.inbound_url = inbound_url
        self.number = number
        self.auto_status = auto_status
        self._requests: list[SinkRequest] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._seq = itertools.count(1)
        self._server: ThreadedServer | None = None
        self._http = httpx.Client(timeout=10.0)
        self._validator = RequestValidator(auth_token)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> TwilioSink:
        """Listen (port 0 = a free port) and serve in a daemon thread."""
        self._server = ThreadedServer(self.host, self.port, _Handler, "twilio-sink", owner=self)
        self.port = self._server.port
        return self

    def stop(self) -> None:
        """Stop serving and close the playback client."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._http.close()

    def __enter__(self) -> TwilioSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What to set as ATMGUARD_TWILIO_BASE_URL."""
        return f"http://{self.host}:{self.port}"

    # -- what was received ----------------------------------------------------------------

    @property
    def requests(self) -> list[SinkRequest]:
        """Every REST call received, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def messages(self) -> list[SinkRequest]:
        """Accepted SMS (POST Messages.json answered 201)."""
        return [r for r in self.requests if r.kind == "message" and r.method == "POST" and r.accepted]

    @property
    def calls(self) -> list[SinkRequest]:
        """Accepted voice calls."""
        return [r for r in self.requests if r.kind == "call" and r.method == "POST" and r.accepted]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._faults.clear()

    def wait_for(self, count: int, *, kind: Kind = "message", timeout: float = 10.0) -> list[SinkRequest]:
        """Block until `count` accepted requests of `kind` arrived (or raise TimeoutError)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                got = [r for r in self._requests if r.kind == kind and r.method == "POST" and r.accepted]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"expected {count} {kind}(s) at the sink, got {len(got)}")
                self._arrived.wait(left)

    def find(self, sid: str) -> SinkRequest:
        for r in self.requests:
            if r.sid == sid and r.method == "POST":
                return r
        raise KeyError(sid)

    # -- fault injection ------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 500, kind: Kind | None = None) -> None:
        """Answer the next `n` POSTs (of `kind`) with HTTP `status` and a Twilio error body."""
        with self._lock:
            self._faults.append(_Fault(kind, n, status=status))

    def delay_next(self, n: int = 1, *, seconds: float, kind: Kind | None = None) -> None:
        """Hold the next `n` POSTs for `seconds` before answering 500 (clients time out first)."""
        with self._lock:
            self._faults.append(_Fault(kind, n, status=500, delay_s=seconds))

    def _take_fault(self, kind: Kind) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if f.remaining > 0 and f.kind in (None, kind):
                    f.remaining -= 1
                    return f
        return None

    # -- playback: what Twilio sends to us ------------------------------------------------

    def sign(self, url: str, params: dict[str, str]) -> str:
        """X-Twilio-Signature for a POST of `params` to `url` (HMAC-SHA1, base64)."""
        signature: str = self._validator.compute_signature(url, params)
        return signature

    def post_signed(self, url: str, params: dict[str, str], *, signature: str | None = None) -> httpx.Response:
        """POST form `params` to `url` as Twilio does; `signature` overrides (for bad-signature tests)."""
        headers = {
            "X-Twilio-Signature": self.sign(url, params) if signature is None else signature,
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
            "User-Agent": "TwilioProxy/1.1",
        }
        if signature == "":
            headers.pop("X-Twilio-Signature")
        return self._http.post(url, data=params, headers=headers)

    def send_status(self, sid: str, status: str, *, error_code: str | None = None, duration_s: int | None = None) -> httpx.Response:
        """Play the status callback Twilio would send for message/call `sid` reaching `status`."""
        req = self.find(sid)
        url = req.status_callback
        if not url:
            raise ValueError(f"{sid} was sent without a StatusCallback")
        params = self._status_params(req, status, error_code=error_code, duration_s=duration_s)
        with self._lock:
            req.status = status
            req.callbacks.append(params)
        return self.post_signed(url, params)

    def _status_params(self, req: SinkRequest, status: str, *, error_code: str | None, duration_s: int | None) -> dict[str, str]:
        common = {"AccountSid": self.account_sid, "From": req.from_ or "", "To": req.to or "", "ApiVersion": API}
        if req.kind == "message":
            params = {**common, "MessageSid": req.sid or "", "SmsSid": req.sid or "", "MessageStatus": status, "SmsStatus": status}
        else:
            params = {
                **common,
                "CallSid": req.sid or "",
                "CallStatus": status,
                "Direction": "outbound-api",
                "CallbackSource": "call-progress-events",
                "SequenceNumber": str(len(req.callbacks)),
                "Timestamp": format_datetime(datetime.now(UTC), usegmt=True),
            }
            if status == "completed":
                params["CallDuration"] = str(duration_s if duration_s is not None else 21)
        if error_code:
            params["ErrorCode"] = error_code
        return params

    def send_inbound_sms(self, from_: str, body: str, *, to: str | None = None, url: str | None = None) -> httpx.Response:
        """Play an SMS someone sent to our number (e.g. an officer's "OK ABCD" reply)."""
        target = url or self.inbound_url or self._guess_inbound_url()
        if not target:
            raise ValueError("no inbound URL: pass url= or construct the sink with inbound_url=")
        sid = "SM" + secrets.token_hex(16)
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "SmsMessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "To": to or self.number or self._our_number() or "",
            "Body": body,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsStatus": "received",
            "ApiVersion": API,
        }
        return self.post_signed(target, params)

    def _guess_inbound_url(self) -> str | None:
        """Where replies go when not configured: next to the last status callback
        (`.../twilio/status/N` -> `.../twilio/sms`), as Twilio's number config would say."""
        for req in reversed(self.requests):
            cb = req.status_callback
            if cb and "/status/" in cb:
                return cb.rsplit("/status/", 1)[0] + "/sms"
        return None

    def _our_number(self) -> str | None:
        for req in reversed(self.requests):
            if req.kind == "message" and req.from_:
                return req.from_
        return None

    def _auto_play(self, req: SinkRequest) -> None:
        """Background: the callbacks a successful delivery produces."""
        try:
            if req.kind == "message":
                steps = ["sent", "delivered"]
            else:
                wanted = set(req.params.get("StatusCallbackEvent", []))
                steps = [s for s in ("initiated", "ringing") if s in wanted]
                steps += (["in-progress"] if "answered" in wanted else []) + ["completed"]
            for status in steps:
                time.sleep(0.05)
                if req.status_callback:
                    self.send_status(req.sid or "", status)
        except Exception as exc:  # noqa: BLE001 - the demo keeps going when our webhook is down, whatever failed
            log.warning("twilio-sink: status playback for %s failed: %s", req.sid, exc)

    # -- REST handling (called by the request handler thread) ---------------------------------

    def _resource(self, req: SinkRequest) -> dict[str, Any]:
        now = format_datetime(req.received_wall, usegmt=True)
        res = "Messages" if req.kind == "message" else "Calls"
        base: dict[str, Any] = {
            "sid": req.sid,
            "account_sid": self.account_sid,
            "api_version": API,
            "to": req.to,
            "from": req.from_,
            "status": req.status,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "price": None,
            "price_unit": "USD",
            "uri": f"/{API}/Accounts/{self.account_sid}/{res}/{req.sid}.json",
        }
        if req.kind == "message":
            from atmguard.notifier.segments import segments

            base.update(
                body=req.body,
                num_segments=str(segments(req.body or "")),
                num_media="0",
                date_sent=None,
                error_code=None,
                error_message=None,
                messaging_service_sid=None,
                subresource_uris={"media": f"/{API}/Accounts/{self.account_sid}/Messages/{req.sid}/Media.json"},
            )
        else:
            base.update(
                to_formatted=req.to,
                from_formatted=req.from_,
                parent_call_sid=None,
                phone_number_sid=None,
                start_time=None,
                end_time=None,
                duration=None,
                answered_by=None,
                caller_name=None,
                queue_time="0",
                trunk_sid=None,
                subresource_uris={},
            )
        return base

    @staticmethod
    def _error(status: int, code: int, message: str) -> dict[str, Any]:
        return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}

    def _validate(self, kind: Kind, params: dict[str, list[str]]) -> dict[str, Any] | None:
        def one(name: str) -> str:
            return (params.get(name) or [""])[0]

        if not one("To"):
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not _E164.match(one("To")):
            return self._error(400, 21211, f"Invalid 'To' Phone Number: {mask_phone(one('To'))}")
        if not one("From") and not one("MessagingServiceSid"):
            return self._error(400, 21603, "A 'From' phone number is required.")
        if kind == "message" and not one("Body") and not one("MediaUrl"):
            return self._error(400, 21602, "Message body is required.")
        if kind == "call" and not (one("Url") or one("Twiml") or one("ApplicationSid")):
            return self._error(400, 21205, "Url, Twiml or ApplicationSid is required.")
        return None

    def handle_rest(self, method: str, path: str, auth: str | None, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        match = _PATH.match(urlparse(path).path)
        if not match:
            return 404, self._error(404, 20404, "The requested resource was not found")
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if auth != expected or match["account"] != self.account_sid:
            return 401, self._error(401, 20003, "Authenticate")
        kind: Kind = "message" if match["res"] == "Messages" else "call"
        if method == "GET":
            if match["sid"]:
                for r in self.requests:
                    if r.sid == match["sid"] and r.method == "POST":
                        return 200, self._resource(r)
                return 404, self._error(404, 20404, "The requested resource was not found")
            items = [self._resource(r) for r in self.requests if r.kind == kind and r.method == "POST" and r.accepted]
            key = "messages" if kind == "message" else "calls"
            uri = f"/{API}/Accounts/{self.account_sid}/{match['res']}.json"
            return 200, {
                key: items, "first_page_uri": uri, "next_page_uri": None, "previous_page_uri": None,
                "page": 0, "page_size": max(50, len(items)), "start": 0, "end": max(0, len(items) - 1), "uri": uri,
            }
        if method != "POST" or match["sid"]:
            return 405, self._error(405, 20004, "Method not allowed")

        fault = self._take_fault(kind)
        now = time.perf_counter()
        wall = datetime.now(UTC)
        status_code, body = 201, None
        if fault is not None:
            status_code, body = fault.status, self._error(fault.status, 20500, "Internal Server Error (injected)")
        else:
            problem = self._validate(kind, form)
            if problem is not None:
                status_code, body = 400, problem
        prefix = "SM" if kind == "message" else "CA"
        req = SinkRequest(
            kind=kind,
            method="POST",
            path=path,
            params=form,
            status_code=status_code,
            sid=(prefix + secrets.token_hex(16)) if status_code == 201 else None,
            received_at=now,
            received_wall=wall,
            fault=("timeout" if fault and fault.delay_s else f"http-{fault.status}") if fault else None,
            status="queued" if status_code == 201 else None,
        )
        with self._arrived:
            self._requests.append(req)
            self._arrived.notify_all()
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)  # recorded on arrival; answered after the client gave up
        if req.accepted:
            log.info("twilio-sink: %s %s to %s", kind, req.sid, mask_phone(req.to))
            if self.auto_status:
                threading.Thread(target=self._auto_play, args=(req,), daemon=True).start()
            return 201, self._resource(req)
        assert body is not None
        return status_code, body

    def summary(self) -> list[dict[str, Any]]:
        """What the sink received, for people: kind, sid, to, status, body or TwiML."""
        return [
            {
                "kind": r.kind, "sid": r.sid, "http_status": r.status_code, "fault": r.fault, "to": r.to,
                "from": r.from_, "status": r.status, "body": r.body, "twiml": r.twiml,
                "status_callback": r.status_callback, "at": r.received_wall.isoformat(),
                "monotonic": r.received_at,
            }
            for r in self.requests
        ]


class _Handler(BaseHTTPRequestHandler):
    owner: TwilioSink
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without NODELAY, Nagle + delayed ACK add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("twilio-sink: " + format, *args)

    def _form(self) -> dict[str, list[str]]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8") if length else ""
        return parse_qs(raw, keep_blank_values=True)

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/_sink/requests"):
            self._reply(200, self.owner.summary())
            return
        status, payload = self.owner.handle_rest("GET", self.path, self.headers.get("Authorization"), {})
        self._reply(status, payload)

    def do_POST(self) -> None:
        form = self._form()
        if self.path.startswith("/_sink/"):
            self._control(form)
            return
        try:
            status, payload = self.owner.handle_rest("POST", self.path, self.headers.get("Authorization"), form)
        except BrokenPipeError:
            return
        # the client may have timed out and left: that is what a timeout fault is for
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._reply(status, payload)

    def _control(self, form: dict[str, list[str]]) -> None:
        def one(name: str) -> str:
            return (form.get(name) or [""])[0]

        try:
            if self.path.startswith("/_sink/inbound"):
                resp = self.owner.send_inbound_sms(one("From"), one("Body"), to=one("To") or None)
            elif self.path.startswith("/_sink/status"):
                resp = self.owner.send_status(one("Sid"), one("Status"), error_code=one("ErrorCode") or None)
            else:
                self._reply(404, {"error": "unknown control endpoint"})
                return
        except (KeyError, ValueError, httpx.HTTPError) as exc:
            self._reply(400, {"error": str(exc)})
            return
        self._reply(200, {"forwarded_status": resp.status_code, "response": resp.text})


def main(argv: list[str] | None = None) -> None:
    """`python -m atmguard.apps.twilio_sink --port N`: a bare sink (benchmarks run it apart)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    sink = TwilioSink(host=args.host, port=args.port).start()
    print(sink.base_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()


if __name__ == "__main__":
    main()

"""The real twilio SDK, optionally pointed at a local Twilio-compatible server.

`twilio.rest.Client` builds URLs on https://api.twilio.com; `BaseUrlHttpClient` rewrites
that origin to `settings.twilio_base_url` (the local sink) and applies a request timeout.
With real credentials and no base URL the same code talks to Twilio.
"""

from __future__ import annotations

import logging
from typing import Any

from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from atmguard.core.errors import ConfigError
from atmguard.core.settings import Settings

TWILIO_ORIGIN = "https://api.twilio.com"

# Credentials the local sink accepts when none are configured: only ever used together with
# a local base URL, never with the real Twilio API.
SINK_ACCOUNT_SID = "AC" + "0" * 31 + "1"
SINK_AUTH_TOKEN = "atmguard-local-sink-token"

# The SDK logs every request at INFO; ours logs what matters (masked) instead.
_sdk_log = logging.getLogger("atmguard.notifier.twilio_http")
_sdk_log.setLevel(logging.WARNING)


class BaseUrlHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    """Twilio's requests-based HTTP client, sending api.twilio.com calls to `base_url`."""

    def __init__(self, base_url: str | None = None, timeout: float = 10.0) -> None:
        super().__init__(timeout=timeout, logger=_sdk_log)
        self.base_url = base_url.rstrip("/") if base_url else None
        if self.base_url and self.session is not None:
            # A local sink needs no proxy from the environment; scanning os.environ on every
            # request cost more CPU than the rest of the HTTP call.
            self.session.trust_env = False

    def rewrite(self, url: str) -> str:
        """The URL the request really goes to."""
        if self.base_url and url.startswith(TWILIO_ORIGIN):
            return self.base_url + url[len(TWILIO_ORIGIN) :]
        return url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        return super().request(method, self.rewrite(url), *args, **kwargs)


def twilio_credentials(settings: Settings) -> tuple[str, str]:
    """(account sid, auth token): configured, or the local sink's when a base URL is set."""
    sid = settings.twilio_account_sid
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    if sid and token:
        return sid, token
    if settings.twilio_base_url:
        return sid or SINK_ACCOUNT_SID, token or SINK_AUTH_TOKEN
    raise ConfigError(
        "Twilio credentials missing: set ATMGUARD_TWILIO_ACCOUNT_SID and ATMGUARD_TWILIO_AUTH_TOKEN, "
        "or ATMGUARD_TWILIO_BASE_URL to use a local twilio-sink",
        field="twilio_auth_token",
    )


def make_twilio_client(settings: Settings, *, timeout: float = 10.0) -> Client:
    """A twilio.rest.Client for these settings (local sink or the real API)."""
    sid, token = twilio_credentials(settings)
    return Client(sid, token, http_client=BaseUrlHttpClient(settings.twilio_base_url, timeout=timeout))

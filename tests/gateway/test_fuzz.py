"""No 5xx for any input: schemathesis against /openapi.json, unsigned and signed, plus arbitrary
JSON bodies signed with a valid key (so the fuzzing reaches validation, not only the 401)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from atmguard.core.settings import GatewaySettings, Settings
from atmguard.gateway.api.app import create_app
from tests.conftest import REPO
from tests.gateway.conftest import RecordingPublisher, bank_event, signed

with warnings.catch_warnings():  # schemathesis drives ASGI apps through starlette's TestClient
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
_STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def gateway_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    s = Settings(data_dir=tmp / "data", config_dir=REPO / "configs", rules_dir=tmp / "no-rules")
    app = create_app(s, publisher=RecordingPublisher(), config=GatewaySettings(rate_per_s=1e6, rate_burst=1_000_000, max_body_bytes=65536))
    _STATE["key"] = app.state.gateway.keys.add("halyk")
    return app


@pytest.fixture(scope="module")
def api_schema(gateway_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", gateway_app)


@pytest.fixture(scope="module")
def client(gateway_app: Any) -> Any:
    with TestClient(gateway_app) as c:
        yield c


def _operations(api_schema: Any) -> list[Any]:
    ops = []
    for result in api_schema.get_all_operations():
        ops.append(result.ok())
    return ops


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_server_error_for_any_generated_request(api_schema: Any, client: Any, mode: Any) -> None:
    """Every operation of /openapi.json with schemathesis-generated data, unsigned and signed."""
    ops = _operations(api_schema)
    assert any(op.path == "/v1/events" for op in ops)

    @given(data=st.data())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def run(data: Any) -> None:
        op = data.draw(st.sampled_from(ops))
        case = data.draw(op.as_strategy(generation_mode=mode))
        case.call_and_validate(checks=[not_a_server_error])
        if op.path == "/v1/events":
            body = case.body if isinstance(case.body, dict | list | str | int | float | bool) else None
            raw, headers = signed("halyk", _STATE["key"], json.dumps(body).encode())
            r = client.post("/v1/events", content=raw, headers=headers)
            assert r.status_code in (202, 400, 401, 413, 422), r.text

    run()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["type", "id", "bank_id", "atm_id", "ts", "amount", "currency", "status", "payee_new", "extra"])


@given(mutations=st.dictionaries(fields, json_values, max_size=3), drop=st.lists(fields, max_size=2), batch=st.booleans())
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_signed_mutated_events_get_an_answer_not_a_crash(client: Any, mutations: dict[str, Any], drop: list[str], batch: bool) -> None:
    event = {**bank_event("fuzz", amount=10), **mutations}
    for f in drop:
        event.pop(f, None)
    raw, headers = signed("halyk", _STATE["key"], [event] if batch else event)
    r = client.post("/v1/events", content=raw, headers=headers)
    assert r.status_code in (202, 400, 401, 413, 422), r.text
    if r.status_code in (400, 422):
        assert r.json()["error"]


@given(raw=st.binary(max_size=300))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_signed_garbage_bytes_are_a_4xx(client: Any, raw: bytes) -> None:
    body, headers = signed("halyk", _STATE["key"], raw)
    r = client.post("/v1/events", content=body, headers=headers)
    assert 400 <= r.status_code < 500

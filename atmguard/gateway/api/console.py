"""The dispatcher console: log-in, live case list (SSE), case actions, rule authors' view.

Server-rendered Jinja2 pages plus one small vanilla script; no CDN, no build step. Sessions
are signed cookies; every POST carries the session's CSRF token (form field or X-CSRF-Token).
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.templating import Jinja2Templates

from atmguard.gateway.api.deps import GatewayDep, UserDep
from atmguard.gateway.api.state import GatewayState
from atmguard.gateway.casebook import CaseError
from atmguard.gateway.follower import notice
from atmguard.gateway.users import authenticate
from atmguard.rules import load_rules
from atmguard.store.cases import OUTCOMES

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parents[1] / "templates"))
ACTORS = ("dispatcher", "supervisor")


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return str(token)


async def _csrf_ok(request: Request, form: Any = None) -> bool:
    expected = request.session.get("csrf")
    given = request.headers.get("x-csrf-token") or (form.get("csrf") if form is not None else None)
    return isinstance(expected, str) and isinstance(given, str) and bool(expected) and secrets.compare_digest(expected, given)


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/console/login?next={quote(str(request.url.path))}", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/console") -> Response:
    return templates.TemplateResponse(request, "login.html", {"csrf": _csrf(request), "next": next, "error": None})


@router.post("/login")
async def login(request: Request, gw: GatewayDep) -> Response:
    form = await request.form()
    target = str(form.get("next") or "/console")
    if not target.startswith("/console"):
        target = "/console"
    if not await _csrf_ok(request, form):
        return templates.TemplateResponse(
            request, "login.html", {"csrf": _csrf(request), "next": target, "error": "Session expired; try again."}, status_code=403
        )
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    user = authenticate(gw.sessions, name, password) if name and password else None
    if user is None:
        gw.cases.audit(name[:200] or "?", "user.login_failed", None, {})
        return templates.TemplateResponse(
            request, "login.html", {"csrf": _csrf(request), "next": target, "error": "Wrong name or password."}, status_code=401
        )
    request.session.clear()
    request.session.update({"user": user.name, "role": user.role, "csrf": secrets.token_urlsafe(32)})
    gw.cases.audit(user.name, "user.login", None, {"role": user.role})
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
async def logout(request: Request, gw: GatewayDep, user: UserDep) -> Response:
    form = await request.form()
    if user and await _csrf_ok(request, form):
        gw.cases.audit(user["name"], "user.logout", None, {})
        request.session.clear()
    return RedirectResponse("/console/login", status_code=303)


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
async def console_page(request: Request, gw: GatewayDep, user: UserDep) -> Response:
    if user is None:
        return _login_redirect(request)
    districts = sorted({a.district for a in gw.cases.atms.values()})
    return templates.TemplateResponse(
        request,
        "console.html",
        {"user": user, "csrf": _csrf(request), "districts": districts, "outcomes": OUTCOMES,
         "can_act": user["role"] in ACTORS},
    )


@router.get("/rules", response_class=HTMLResponse)
async def rules_page(request: Request, gw: GatewayDep, user: UserDep) -> Response:
    if user is None:
        return _login_redirect(request)
    counts = gw.cases.firing_counts()
    rules: list[dict[str, Any]] = []
    error = None
    try:
        for r in load_rules([gw.settings.rules_dir]).rules:
            c = counts.pop((r.rule, r.version), {})
            rules.append({"rule": r.rule, "version": r.version, "severity": r.severity, "mode": r.mode,
                          "enabled": r.enabled, "hold": r.actions.hold, "description": r.description, "current": True, **c})
    except Exception as exc:  # noqa: BLE001 - the page shows why the rule pack could not be read
        error = str(exc)
    for (rule, version), c in sorted(counts.items()):
        rules.append({"rule": rule, "version": version, "current": False, **c})
    return templates.TemplateResponse(
        request, "rules.html", {"user": user, "csrf": _csrf(request), "rules": rules, "error": error, "outcomes": OUTCOMES}
    )


@router.get("/api/cases")
async def list_cases(request: Request, gw: GatewayDep, user: UserDep, state: str | None = "active",
                     district: str | None = None) -> Response:
    if user is None:
        return JSONResponse({"error": "log in first", "field": None}, status_code=401)
    state = state if state in ("active", "open", "acknowledged", "closed") else None
    return JSONResponse(gw.cases.list_cases(state=state, district=district or None))


@router.get("/api/cases/{iv_id}")
async def case_detail(request: Request, iv_id: str, gw: GatewayDep, user: UserDep) -> Response:
    if user is None:
        return JSONResponse({"error": "log in first", "field": None}, status_code=401)
    detail = gw.cases.detail(iv_id)
    if detail is None:
        return JSONResponse({"error": f"no intervention {iv_id!r}", "field": None}, status_code=404)
    return JSONResponse(detail)


@router.post("/api/cases/{iv_id}/{action}")
async def case_action(request: Request, iv_id: str, action: str, gw: GatewayDep, user: UserDep) -> Response:
    if user is None:
        return JSONResponse({"error": "log in first", "field": None}, status_code=401)
    if not await _csrf_ok(request):
        return JSONResponse({"error": "missing or wrong CSRF token", "field": "X-CSRF-Token"}, status_code=403)
    if user["role"] not in ACTORS:
        return JSONResponse({"error": f"role {user['role']} cannot change cases", "field": None}, status_code=403)
    try:
        data = await request.json()
    except ValueError:  # not JSON (or not UTF-8): treated as an empty form
        data = {}
    if not isinstance(data, dict):
        data = {}
    by = user["name"]
    try:
        if action == "ack":
            result = gw.cases.acknowledge(iv_id, by, "console")
            if gw.notifier is not None:
                # if this fails escalation keeps running; the case is acknowledged anyway
                with contextlib.suppress(Exception):
                    await gw.notifier.acknowledge(iv_id, by=by, via="console")
        elif action == "assign":
            result = gw.cases.assign(iv_id, str(data.get("assignee", "")), by)
        elif action == "note":
            result = gw.cases.note(iv_id, str(data.get("text", "")), by)
        elif action == "close":
            result = gw.cases.close(iv_id, str(data.get("outcome", "")), by, str(data.get("note") or "") or None)
            gw.advisor.on_closed(iv_id, result.get("atm_id"))
            _tell_banks_closed(request, gw, result)
        else:
            return JSONResponse({"error": f"unknown action {action!r}", "field": "action"}, status_code=404)
    except CaseError as exc:
        return JSONResponse({"error": str(exc), "field": None}, status_code=exc.status)
    return JSONResponse(result)


def _tell_banks_closed(request: Request, gw: GatewayState, summary: dict[str, Any]) -> None:
    webhooks = request.app.state.webhooks
    told = {e["details"].get("bank_id") for e in gw.cases.audit_log(summary["id"]) if e["action"] == "bank.webhook"}
    banks = {b for b in told if b}
    if banks:
        webhooks.notify(banks, "intervention.closed", notice(summary, outcome=summary.get("outcome")))


@router.get("/events")
async def events(request: Request, gw: GatewayDep, user: UserDep) -> Response:
    if user is None:
        return JSONResponse({"error": "log in first", "field": None}, status_code=401)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(gw.cases.live.stream(), media_type="text/event-stream", headers=headers)


@router.get("/snapshot")
async def snapshot(request: Request, gw: GatewayDep, user: UserDep, ref: str = "") -> Response:
    """A snapshot JPEG named by a fact's `snapshot` reference, if it lies in a snapshot folder."""
    if user is None:
        return JSONResponse({"error": "log in first", "field": None}, status_code=401)
    roots = [Path(d).resolve() for d in (gw.config.snapshot_dirs or [gw.settings.data_dir / "snapshots"])]
    for root in roots:
        path = (root / ref).resolve()  # an absolute reference stays absolute
        if ref and path.is_relative_to(root) and path.suffix.lower() in (".jpg", ".jpeg", ".png") and path.is_file():
            return FileResponse(path)
    return JSONResponse({"error": "no such snapshot", "field": "ref"}, status_code=404)

"""What a gateway route may ask for, as `Annotated` dependencies (the state create_app assembled, the user)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from atmguard.gateway.api.state import GatewayState


def get_gateway(request: Request) -> GatewayState:
    """The gateway's shared state, set on the app by create_app."""
    return cast(GatewayState, request.app.state.gateway)


def current_user(request: Request) -> dict[str, str] | None:
    """The logged-in console user ({name, role}) from the signed session cookie, or None."""
    name = request.session.get("user")
    return {"name": name, "role": request.session.get("role", "")} if name else None


GatewayDep = Annotated[GatewayState, Depends(get_gateway)]
UserDep = Annotated[dict[str, str] | None, Depends(current_user)]

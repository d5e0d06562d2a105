"""Liveness: unauthenticated, cheap (also the benchmark's baseline)."""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz(request: Request) -> dict[str, object]:
    follower = request.app.state.follower
    return {"status": "ok", "following": bool(follower and follower.ready.is_set())}

"""A FastAPI websocket server that keeps its users' presence: each connection is tracked
on connect and untracked on disconnect, by one AsyncPresenceTracker per process.

Every open websocket is one presence session of its user: a user with two tabs open
has two sessions and stays online until the last one closes (then offline at once,
not after the timeout). The tracker beats every open connection with the service
role key, 1,000 sessions per request, once per interval; the user's own access token
only proves who is connecting.

Protocol: connect to ``/ws?token=<the user's access token>``; the server answers
``{"session_id": ...}``; send ``online``, ``away`` or ``busy`` to change the status
of this connection. ``/health`` shows the tracker's counters.

Environment: SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY and SUPABASE_JWT_SECRET (the
project's JWT secret, to verify the users' HS256 access tokens; for projects with
asymmetric signing keys, verify against the JWKS instead).
Run: ``uvicorn examples.fastapi_ws:app`` (uvicorn is not a dependency of the SDK).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
from fastapi import FastAPI, WebSocket, WebSocketDisconnect, status

from presence_sdk import AsyncPresenceTracker, PresenceError

logger = logging.getLogger("fastapi_ws")


def report(error: PresenceError) -> None:
    """The tracker never raises into the app; it reports here (and in its stats)."""
    logger.warning("presence: %s", error)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncPresenceTracker.from_url(
        os.environ["SUPABASE_URL"], os.environ["SUPABASE_SERVICE_ROLE_KEY"], on_error=report
    ) as tracker:
        app.state.tracker = tracker
        yield
    # leaving: every session still open was ended (its users are offline now)


app = FastAPI(lifespan=lifespan)


def authenticated_user(token: str) -> uuid.UUID | None:
    """The user id of a valid Supabase access token, else None."""
    try:
        claims = jwt.decode(
            token,
            os.environ["SUPABASE_JWT_SECRET"],
            algorithms=["HS256"],
            audience="authenticated",
        )
        return uuid.UUID(claims["sub"])
    except (jwt.InvalidTokenError, KeyError, ValueError):
        return None


@app.websocket("/ws")
async def presence_socket(websocket: WebSocket, token: str = "") -> None:
    user_id = authenticated_user(token)
    if user_id is None:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    await websocket.accept()
    tracker: AsyncPresenceTracker = websocket.app.state.tracker
    device = websocket.headers.get("user-agent", "")[:64] or None
    session = tracker.track(user_id, device=device)  # online now (sent within ~50 ms)
    try:
        await websocket.send_json({"session_id": str(session)})
        while True:
            message = await websocket.receive_text()
            if message in ("online", "away", "busy"):
                tracker.set_status(session, message)
                await websocket.send_json({"status": message})
            else:
                await websocket.send_json({"error": "send online, away or busy"})
    except WebSocketDisconnect:
        pass
    finally:
        tracker.untrack(session)  # ended now: offline if it was the user's last one


@app.get("/health")
async def health() -> dict[str, Any]:
    stats = app.state.tracker.stats
    return {
        "state": str(stats.state),
        "connections": stats.sessions,
        "rounds": stats.rounds,
        "sessions_beaten": stats.sessions_beaten,
        "batches_failed": stats.batches_failed,
    }

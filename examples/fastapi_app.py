"""A FastAPI app: verify the presence setup at startup, keep a presence client running.

The lifespan checks the database with ``averify_setup()`` (service role key: the app
refuses to start with a broken setup, printing what to fix), then runs an
``AsyncPresenceClient`` for the app's own service user while it serves.

Environment: SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY,
SUPABASE_ACCESS_TOKEN (the signed-in service user's JWT).
Run: ``uvicorn examples.fastapi_app:app`` (uvicorn is not a dependency of the SDK).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from supabase import AsyncClientOptions, acreate_client

from presence_sdk import AsyncPresenceClient, InvalidInputError, averify_setup


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    url = os.environ["SUPABASE_URL"]
    async with httpx.AsyncClient(timeout=5) as admin_http, httpx.AsyncClient(timeout=5) as http:
        admin = await acreate_client(
            url,
            os.environ["SUPABASE_SERVICE_ROLE_KEY"],
            options=AsyncClientOptions(httpx_client=admin_http),
        )
        app.state.setup = await averify_setup(admin)  # raises SetupError: app won't start
        user = await acreate_client(
            url,
            os.environ["SUPABASE_ANON_KEY"],
            options=AsyncClientOptions(
                httpx_client=http,
                headers={"Authorization": f"Bearer {os.environ['SUPABASE_ACCESS_TOKEN']}"},
            ),
        )
        async with AsyncPresenceClient(user) as presence:
            app.state.presence = presence
            yield
        # leaving: the presence client sent its leave


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, Any]:
    stats = app.state.presence.stats
    return {
        "setup_ok": app.state.setup.ok,
        "presence_state": str(stats.state),
        "beats_sent": stats.beats_sent,
    }


@app.get("/presence/{user_id}")
async def presence_of(user_id: str) -> dict[str, Any]:
    try:
        p = await app.state.presence.get(user_id)
    except InvalidInputError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    return {
        "user_id": str(p.user_id),
        "status": p.status,
        "online": p.online,
        "last_seen": p.last_seen.isoformat() if p.last_seen else None,
    }


@app.get("/online")
async def online(limit: int = 50, after: uuid.UUID | None = None) -> dict[str, Any]:
    page = await app.state.presence.online_users(limit=limit, after=after)
    return {
        "users": [str(p.user_id) for p in page],
        "next_after": str(page.next_after) if page.next_after else None,
    }

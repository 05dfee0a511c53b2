"""One RPC over a supabase ``AsyncClient``'s PostgREST session, under a total deadline.

Shared by :class:`~presence_sdk.AsyncPresenceClient` and
:class:`~presence_sdk.AsyncPresenceTracker`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from supabase import AsyncClient

from presence_sdk._core import Call
from presence_sdk._errors import translate
from presence_sdk._wire import build_request, parse_response

__all__ = ["send_call"]


async def send_call(supabase: AsyncClient, call: Call) -> Any:
    """Perform ``call``; its JSON result, or the translated PresenceError."""
    try:
        rest = supabase.postgrest
        async with asyncio.timeout(call.timeout):
            response = await rest.session.send(build_request(rest.session, rest, call))
    except Exception as exc:
        raise translate(exc) from exc
    return parse_response(response)

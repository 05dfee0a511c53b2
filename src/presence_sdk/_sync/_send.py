"""One RPC over a supabase ``Client``'s PostgREST session, under a total deadline.

Shared by :class:`~presence_sdk.PresenceClient` and :class:`~presence_sdk.PresenceTracker`:
the request is built from the client's current headers (:mod:`presence_sdk._wire`)
and sent on a pooled sender thread, so that ``call.timeout`` bounds the whole request
(:mod:`presence_sdk._sync._deadline`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
from supabase import Client

from presence_sdk._core import Call
from presence_sdk._errors import translate
from presence_sdk._sync._deadline import Job, run_with_deadline
from presence_sdk._wire import build_request, parse_response

__all__ = ["send_call"]


def send_call(supabase: Client, call: Call) -> Any:
    """Perform ``call``; its JSON result, or the translated PresenceError."""
    try:
        rest = supabase.postgrest
        request = build_request(rest.session, rest, call)
        response = run_with_deadline(partial(_send, rest.session, request), call.timeout)
    except Exception as exc:
        raise translate(exc) from exc
    return parse_response(response)


def _send(http: httpx.Client, request: httpx.Request, job: Job[httpx.Response]) -> httpx.Response:
    """Send ``request`` and read the whole response, on a sender thread; tell ``job``
    which connection it uses, so that giving up can abort it."""
    request.extensions["trace"] = job.trace
    response = http.send(request, stream=True)
    try:
        job.watch(response.extensions.get("network_stream"))
        response.read()
    finally:
        response.close()
    return response

"""A stand-in for the sessions SQL's batch RPCs, for the tracker unit tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from presence_sdk._core import Call
from presence_sdk._exceptions import RejectedError

T0 = "2025-01-02T03:04:05+00:00"
SETTINGS = {"heartbeat_interval_seconds": 10, "timeout_seconds": 30}


@dataclass
class FakeSQL:
    """The batch RPCs' answers and errors, as the sessions migration raises them."""

    users: set[str] = field(default_factory=set)  # public.users
    owner: dict[str, str] = field(default_factory=dict)  # session -> user, other writers
    live: dict[str, dict[str, Any]] = field(default_factory=dict)  # session -> entry
    invalid_devices: set[str] = field(default_factory=set)  # devices the server refuses
    max_batch: int = 10_000
    invisible: set[str] = field(default_factory=set)  # users in invisible mode

    def __call__(self, call: Call) -> Any:
        if call.fn == "presence_track_beat":
            return self.beat(call.params["sessions"])
        if call.fn == "presence_track_end":
            ended = [s for s in call.params["session_ids"] if self.live.pop(s, None)]
            return {"ended_at": T0, "count": len(ended)}
        if call.fn == "presence_settings":
            return SETTINGS
        if call.fn == "presence_set_invisible_for":
            return self.set_invisible(call.params["user_ids"], call.params["invisible"])
        raise AssertionError(call.fn)

    def beat(self, entries: list[dict[str, Any]]) -> Any:
        if len(entries) > self.max_batch:
            msg = f"presence: at most {self.max_batch} sessions per call (got {len(entries)})"
            raise RejectedError(msg, code="22023", status=400)
        bad = [
            f"#{n}: device must be a string of 1 to 64 characters"
            for n, e in enumerate(entries, 1)
            if e.get("device") in self.invalid_devices
        ]
        if bad:
            msg = f"presence: {len(bad)} of {len(entries)} session entries are invalid"
            detail = "; ".join(bad[:5]) + ("; ..." if len(bad) > 5 else "")
            raise RejectedError(msg, code="22023", status=400, details=detail)
        theirs = sorted(
            f"{e['session_id']} (given user {e['user_id']})"
            for e in entries
            if self.owner.get(e["session_id"], e["user_id"]) != e["user_id"]
        )
        if theirs:
            msg = f"presence: {len(theirs)} sessions belong to other users; nothing was written"
            detail = "; ".join(theirs[:5]) + ("; ..." if len(theirs) > 5 else "")
            raise RejectedError(msg, code="PT409", status=409, details=detail)
        unknown = sorted({e["user_id"] for e in entries} - self.users)
        if unknown:
            msg = f"presence: {len(unknown)} user ids have no public.users row"
            detail = "unknown: " + ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise RejectedError(msg, code="23503", status=409, details=detail)
        for entry in entries:
            self.live[entry["session_id"]] = entry
        return {"beat_at": T0, "count": len(entries)}

    def set_invisible(self, user_ids: list[str], invisible: bool) -> Any:
        """presence_set_invisible_for: all or nothing, like the privacy migration."""
        unknown = sorted(set(user_ids) - self.users)
        if unknown:
            msg = f"presence: {len(unknown)} user ids have no public.users row; nothing was changed"
            detail = "unknown: " + ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise RejectedError(msg, code="23503", status=409, details=detail)
        wanted = set(user_ids)
        changed = wanted - self.invisible if invisible else wanted & self.invisible
        self.invisible = self.invisible | wanted if invisible else self.invisible - wanted
        return {"changed": len(changed), "at": T0}

    def handle(self, request: httpx.Request) -> httpx.Response:
        """A respx side effect: answer like PostgREST over this fake SQL."""
        fn = request.url.path.rsplit("/", 1)[-1]
        params = json.loads(request.content or b"{}")
        try:
            result = self(Call(fn, params, 1.0))
        except RejectedError as exc:
            body = {"code": exc.code, "message": exc.message, "details": exc.details, "hint": None}
            return httpx.Response(exc.status or 400, json=body)
        return httpx.Response(200, json=result)

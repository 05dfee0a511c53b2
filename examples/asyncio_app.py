"""An asyncio app: presence runs as a task beside the app's own work.

Environment: SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_ACCESS_TOKEN (a signed-in
user's JWT), WORK_SECONDS (default 5).
"""

from __future__ import annotations

import asyncio
import os

import httpx
from supabase import AsyncClientOptions, acreate_client

from presence_sdk import AsyncPresenceClient


async def main() -> None:
    token = os.environ["SUPABASE_ACCESS_TOKEN"]
    supabase = await acreate_client(
        os.environ["SUPABASE_URL"],
        os.environ["SUPABASE_ANON_KEY"],
        options=AsyncClientOptions(
            httpx_client=httpx.AsyncClient(timeout=5),
            headers={"Authorization": f"Bearer {token}"},
        ),
    )
    async with AsyncPresenceClient(supabase) as presence:
        await asyncio.sleep(float(os.environ.get("WORK_SECONDS", "5")))  # the app's work
        presence.set_status("busy")  # takes effect with an immediate heartbeat
        page = await presence.online_users(limit=10)
        print(f"online users on the first page: {len(page)}")
        print(f"heartbeats sent: {presence.stats.beats_sent}")
    print("left")


if __name__ == "__main__":
    asyncio.run(main())

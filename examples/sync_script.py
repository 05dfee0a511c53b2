"""A plain script: keep the user online while it works, then leave.

Environment:
    SUPABASE_URL, SUPABASE_ANON_KEY  your project's URL and anon key
    SUPABASE_ACCESS_TOKEN            a signed-in user's JWT (in a real app, sign in
                                     with supabase.auth.sign_in_with_password(...))
    WORK_SECONDS                     how long to "work" (default 5)
"""

from __future__ import annotations

import logging
import os
import time

import httpx
from supabase import ClientOptions, create_client

from presence_sdk import PresenceClient


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    token = os.environ["SUPABASE_ACCESS_TOKEN"]
    supabase = create_client(
        os.environ["SUPABASE_URL"],
        os.environ["SUPABASE_ANON_KEY"],
        options=ClientOptions(
            httpx_client=httpx.Client(timeout=5),
            headers={"Authorization": f"Bearer {token}"},
        ),
    )
    with PresenceClient(supabase) as presence:  # first heartbeat now, then every 15 s
        time.sleep(float(os.environ.get("WORK_SECONDS", "5")))  # the script's real work
        presence.set_status("away")
        counts = presence.counts()
        print(f"online now: {counts.present} of {counts.total} users")
        print(f"heartbeats sent: {presence.stats.beats_sent}")
    # leaving the block sent a leave: the user is offline at once
    print("left")


if __name__ == "__main__":
    main()

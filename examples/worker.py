"""A long-running worker: online while it runs, offline at once on SIGTERM.

``handle_sigterm=True`` makes the client stop (sending its leave) when the process
gets SIGTERM, then hands the signal to the handler that was there before — here the
worker's own, which ends the work loop. The client never replaces your handler.

Environment: SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_ACCESS_TOKEN.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

from presence_sdk import PresenceClient, PresenceConfig

stopping = threading.Event()


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    print("worker: SIGTERM, finishing the current job", flush=True)
    stopping.set()


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)  # the app's own handler, installed first
    presence = PresenceClient.from_url(
        os.environ["SUPABASE_URL"],
        os.environ["SUPABASE_ANON_KEY"],
        access_token=os.environ["SUPABASE_ACCESS_TOKEN"],
        config=PresenceConfig(handle_sigterm=True),
    )
    presence.start()
    print("worker: ready", flush=True)
    jobs = 0
    while not stopping.wait(0.2):  # stand-in for pulling jobs from a queue
        jobs += 1
    presence.stop()  # already stopped by the SIGTERM hook; idempotent
    presence.close()
    print(f"worker: stopped after {jobs} polls; presence state {presence.stats.state}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m presence_sdk``: the ``presence-sdk`` command line."""

from presence_sdk.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

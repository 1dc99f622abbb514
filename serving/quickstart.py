"""`make quickstart`: the main job. Placeholder until the services are wired together."""

from __future__ import annotations


def main() -> int:
    print("sona quickstart: not yet — the library, services and bridge are being built (see issues #3-#8).")
    print("Run `make test` to exercise everything that exists today.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

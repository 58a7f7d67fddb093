"""Container health check: exit 0 when every URL answers 2xx within the timeout, else 1.

Usage: ``python scripts/healthcheck.py URL [URL ...]`` (the image has no curl).
Environment: ``HEALTHCHECK_TIMEOUT_S`` (default 3); an https URL is verified against
``TLS_CA_FILE`` when set (the process's own CA bundle), else the system's trust store.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request


def healthy(url: str, timeout_s: float) -> bool:
    """Whether ``url`` answers a 2xx status within ``timeout_s``."""
    try:
        context = ssl.create_default_context(cafile=os.environ.get("TLS_CA_FILE") or None)
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:  # noqa: S310
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):  # a CA bundle missing: unhealthy too
        return False


def main(urls: list[str]) -> int:
    if not urls:
        print("usage: healthcheck.py URL [URL ...]", file=sys.stderr)
        return 2
    timeout_s = float(os.environ.get("HEALTHCHECK_TIMEOUT_S", "3"))
    failing = [url for url in urls if not healthy(url, timeout_s)]
    for url in failing:
        print(f"unhealthy: {url}", file=sys.stderr)
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

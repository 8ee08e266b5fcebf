"""Docker HEALTHCHECK for ortserve: exit 0 when GET /v2/health/ready answers 200, else 1.

Reads the same environment as the server (ORTSERVE_HOST, ORTSERVE_HTTP_PORT), so set the HTTP
port through the environment, not a flag, when you change it. With ORTSERVE_HTTP_HEALTH_PORT set
(the plaintext health port, for an HTTP port behind TLS or credentials) that port is probed
instead. A wildcard host is probed on loopback. Proxies from the environment are ignored: the
probe is always local.
"""

import os
import sys
import urllib.error
import urllib.request


def ready_url() -> str:
    host = os.environ.get("ORTSERVE_HOST", "0.0.0.0").strip()
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    health_port = os.environ.get("ORTSERVE_HTTP_HEALTH_PORT", "0").strip()
    port = health_port if health_port not in ("", "0") else os.environ.get("ORTSERVE_HTTP_PORT", "8000").strip()
    return f"http://{host}:{port}/v2/health/ready"


def main() -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = ready_url()
    try:
        with opener.open(url, timeout=3.0) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as error:
        print(f"{url}: HTTP {error.code}", file=sys.stderr)
    except (OSError, ValueError) as error:
        print(f"{url}: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""Polls the service started by deploy setup until /health answers, or fails."""
import sys
import time
import urllib.request

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8765/health"
for _ in range(50):
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                print("healthy")
                sys.exit(0)
    except OSError:
        time.sleep(0.1)
print(f"no answer from {url}", file=sys.stderr)
sys.exit(1)

"""The network guard every test server runs behind: non-loopback connections and lookups are refused and
recorded, loopback works."""
import os
import subprocess
import sys

from dreamo_testkit import NETWORK_GUARD

PROBE = r"""
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
threading.Thread(target=srv.accept, daemon=True).start()
socket.create_connection(srv.getsockname(), timeout=5).close()
print("loopback ok")
for target in (("93.184.216.34", 80), ("example.com", 443)):
    try:
        socket.create_connection(target, timeout=5)
        print("CONNECTED", target)
    except OSError as e:
        print("refused", target, type(e).__name__)
"""


def test_guard_refuses_and_records_everything_but_loopback(tmp_path):
    log = tmp_path / "attempts.log"
    env = dict(os.environ, PYTHONPATH=NETWORK_GUARD, DREAMO_NETWORK_LOG=str(log))
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "loopback ok" in out.stdout and "CONNECTED" not in out.stdout
    assert out.stdout.count("refused") == 2
    text = log.read_text()
    assert "refused connect to ('93.184.216.34', 80)" in text and "refused name lookup of 'example.com'" in text

"""The test kit's server runner when its port is taken between picking and binding (another test worker's server
started at the same moment): it must not take the other server for its own, and it starts on another port."""
import http.server
import json
import threading

import pytest

pytestmark = [pytest.mark.host, pytest.mark.server]


class OtherServer(http.server.BaseHTTPRequestHandler):
    """What another sandbox's ComfyUI answers on the port."""

    def do_GET(self):
        body = json.dumps({"system": {"argv": ["main.py", "--base-directory", "/elsewhere/other-sandbox"]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_port_taken_by_another_server_is_not_mistaken_for_ours(tmp_path):
    import requests

    from dreamo_testkit import tiny_server
    from dreamo_testkit.comfyui_runner import Server

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OtherServer)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    taken = other.server_address[1]
    try:
        srv = Server(tiny_server.sandbox(str(tmp_path / "box")), port=taken).start()
        try:
            assert srv.port != taken
            argv = " ".join(requests.get(srv.url + "/system_stats", timeout=10).json()["system"]["argv"])
            assert str(tmp_path / "box") in argv
        finally:
            srv.stop()
    finally:
        other.shutdown()
        other.server_close()

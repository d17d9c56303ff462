"""Refuses, and records, every network connection of a test ComfyUI server except to loopback.

dreamo_testkit/comfyui_runner.py puts this folder first on the server's PYTHONPATH when DREAMO_NETWORK_GUARD=1 (the
test suite sets it), so Python imports it at start-up. Each refused attempt is appended to the file named by
DREAMO_NETWORK_LOG with the stack that made it; tests/conftest.py fails the run if any file holds one.
"""
import os
import socket
import traceback

_LOG = os.environ.get("DREAMO_NETWORK_LOG", "")
_LOCAL = ("127.", "::1", "localhost", "0.0.0.0")


def _record(what: str) -> None:
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"refused {what}\n{''.join(traceback.format_stack(limit=12))}\n")


def _is_local(host) -> bool:
    return isinstance(host, str) and (host.startswith(_LOCAL) or host == "")


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        _record(f"connect to {address!r}")
        raise OSError(101, "Network is unreachable (refused by the DreamO test network guard)")
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        _record(f"connect_ex to {address!r}")
        return 101
    return _connect_ex(self, address)


def _is_numeric(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and not _is_local(name) and not _is_numeric(name):  # numeric: connect() decides
        _record(f"name lookup of {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, "name lookups are refused by the DreamO test network guard")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.getaddrinfo = getaddrinfo

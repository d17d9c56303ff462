"""The node ids the frontend uses come from the Python side only: no file in web/ names a node, the server hands
them out (GET /dreamo/node_ids) and the page's modules use them (see also test_frontend_browser.py)."""
import os
import re

import pytest
import requests

from dreamo_testkit import REPO

WEB = os.path.join(REPO, "web")
ROUTE = "/dreamo/node_ids"


def web_files():
    return sorted(os.path.join(WEB, f) for f in os.listdir(WEB) if f.endswith(".js"))


def frontend_roles():
    from comfyui_dreamo.nodes import FRONTEND_ROLES

    return {role: cls.NODE_ID for role, cls in FRONTEND_ROLES.items()}


@pytest.mark.host
def test_no_web_file_names_a_node_id():
    from comfyui_dreamo.nodes import NODE_CLASS_MAPPINGS

    assert NODE_CLASS_MAPPINGS
    found = []
    for path in web_files():
        text = open(path, encoding="utf-8").read()
        found += [f"{os.path.basename(path)}: {node}" for node in NODE_CLASS_MAPPINGS
                  if re.search(rf"\b{re.escape(node)}\b", text)]
    assert not found, f"node ids written in web/ (import them from web/node_ids.js): {found}"


@pytest.mark.host
def test_the_roles_web_asks_for_are_the_ones_python_serves():
    text = open(os.path.join(WEB, "node_ids.js"), encoding="utf-8").read()
    asked = re.search(r"const ROLES = \[([^\]]*)\]", text).group(1)
    assert sorted(re.findall(r'"(\w+)"', asked)) == sorted(frontend_roles())


@pytest.mark.host
@pytest.mark.server
def test_the_server_hands_out_the_node_ids(session_server):
    r = requests.get(session_server.url + ROUTE, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.json() == frontend_roles()
    info = requests.get(session_server.url + "/object_info", timeout=60).json()
    assert set(r.json().values()) <= set(info)

"""`import nodes` gives ComfyUI's nodes.py in every test, whatever ran before: the clone's root (a folder named
comfyui-dreamo, on sys.path through pyproject's pytest `pythonpath`, where the test kit imports from) has a `nodes`
package of its own. Both tests fail when run alone without tests/conftest.py's finder."""
import os
import subprocess
import sys

import pytest

from dreamo_testkit import REPO

pytestmark = pytest.mark.host


def test_import_nodes_is_comfyuis_even_with_the_repo_first_on_sys_path():
    from dreamo_testkit import install_tree  # noqa: F401  (imported from the repo's root on sys.path)

    assert os.path.dirname(os.path.abspath(install_tree.__file__)) == os.path.join(REPO, "dreamo_testkit")
    assert REPO in sys.path
    import nodes

    assert os.path.samefile(nodes.__file__, os.path.join(os.environ["COMFYUI_PATH"], "nodes.py"))
    assert hasattr(nodes, "NODE_CLASS_MAPPINGS") and "KSampler" in nodes.NODE_CLASS_MAPPINGS


def test_in_a_fresh_session_the_first_import_of_nodes_is_comfyuis():
    """Run alone, as the report ran tests/test_text_encode_host.py's end-to-end case: nothing imported ComfyUI's
    nodes.py before, so only the import machinery decides."""
    case = "tests/test_import_order.py::test_import_nodes_is_comfyuis_even_with_the_repo_first_on_sys_path"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:random_order",
                        case], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:]

"""dreamo_ops knows no node ids: its errors carry the input, the problem and the fix, and the nodes name themselves
(or, during sampling, the objects a node built carry the id it handed over). Read from the source, no ComfyUI."""
import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def node_ids() -> set[str]:
    """Every node id nodes/ declares: string constants assigned to a name ending in ID (NODE_ID, ROUTING_ID, …)."""
    ids = set()
    for path in (ROOT / "nodes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str):
                if any(isinstance(t, ast.Name) and t.id.endswith("ID") for t in node.targets):
                    ids.add(node.value.value)
    return ids


def prose(tree) -> set[int]:
    """ids of the string constants that are documentation: docstrings and bare string statements."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}


def test_no_node_id_is_data_in_dreamo_ops():
    ids = node_ids()
    assert {"DreamOApply", "DreamORefEncode", "DreamOTextEncode", "DreamORouting", "DreamORoutingMap",
            "DreamORegionalConditioning", "DreamOStageLoader", "DreamOLoader", "DreamOPreprocessorLoader"} <= ids, ids
    word = re.compile(r"\b(" + "|".join(sorted(ids)) + r")\b")
    found = []
    for path in sorted((ROOT / "dreamo_ops").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = prose(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                match = word.search(node.value)
                if match:
                    found.append(f"{path.name}:{node.lineno}: {match.group(0)} in {node.value[:60]!r}")
    assert not found, "node ids spelled in dreamo_ops (name them in nodes/ and hand them over):\n" + "\n".join(found)

"""NaN and ±inf are refused by name on every FLOAT input of every node of the pack (issue 19): ComfyUI's min/max
check lets NaN through, and a number arriving by link is not checked at all. One helper,
`dreamo_ops.errors.finite_numbers`, does it for every node."""
import math

import numpy as np
import pytest

from comfyui_dreamo.dreamo_ops.errors import DreamOError, finite_numbers, refuse_non_finite


def test_refuse_non_finite_names_the_input_and_the_range():
    refuse_non_finite("N", {"a": 1.5, "b": 3, "c": True, "d": "nan", "e": None, "f": 10**400})
    for value in (float("nan"), float("inf"), -math.inf, np.float32("nan"), np.float64("inf")):
        with pytest.raises(DreamOError) as e:
            refuse_non_finite("N", {"a": 1.0, "s": value}, lambda name: (0.0, 2.5, 1.0))
        assert str(e.value) == f"N (input 's'): 's' is {value}, not a number. Fix: set 's' to a number from 0 to " \
                               f"2.5 (default 1)."


def test_the_decorator_checks_positional_keyword_and_extra_inputs():
    @finite_numbers
    class Node:
        NODE_ID = "Node"
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0})}}

        def run(self, x, y=1.0, **more):
            return x, y, more

    assert Node().run(0.25, y=2.0, z=3) == (0.25, 2.0, {"z": 3})
    with pytest.raises(DreamOError, match=r"Node \(input 'x'\): 'x' is nan, not a number\. Fix: set 'x' to a number "
                                          r"from 0 to 1 \(default 0\.5\)\."):
        Node().run(float("nan"))
    with pytest.raises(DreamOError, match=r"\(input 'y'\).*Fix: set 'y' to a number\.$"):
        Node().run(0.1, float("inf"))
    with pytest.raises(DreamOError, match=r"\(input 'z'\)"):
        Node().run(x=0.1, z=float("-inf"))
    with pytest.raises(TypeError):
        Node().run()  # a wrong call keeps Python's own error


@pytest.mark.host
def test_every_float_input_of_every_node_refuses_nan_and_inf():
    from comfyui_dreamo.nodes import NODES

    checked = 0
    for node in NODES:
        function = getattr(node, node.FUNCTION)
        assert getattr(function, "refuses_non_finite", False), f"{node.NODE_ID} is not decorated with finite_numbers"
        declared = node.INPUT_TYPES()
        inputs = {**declared.get("required", {}), **declared.get("optional", {})}
        floats = [name for name, spec in inputs.items() if spec[0] == "FLOAT"]
        for name in floats:
            for bad in (float("nan"), float("inf"), float("-inf")):
                args = {n: None for n in declared.get("required", {})}  # refused before any of them is used
                args[name] = bad
                with pytest.raises(DreamOError) as e:
                    function(node(), **args)
                assert str(e.value).startswith(f"{node.NODE_ID} (input '{name}'): '{name}' is {bad}, not a number.")
                spec = inputs[name][1]
                assert f"from {spec['min']:g} to {spec['max']:g} (default {spec['default']:g})" in str(e.value)
                checked += 1
    assert checked >= 3 * 10  # DreamORouting's 3 and DreamOStageLoader's 7 today

"""One error type whose message always names the node, the input and the fix, and the input checks every node
shares (unknown linked inputs, non-finite numbers).

dreamo_ops knows no node ids: its code raises the error with the input it concerns, the problem and the fix, and the
node words it with its own id (`in_node` around the call, or a `node` argument). What goes wrong during sampling,
where no DreamO node is running, is the same error, naming the node id that the node which built the wrapper or the
settings handed over (`DreamOFluxWrapper.node`, `RoutingSpec.node`, `RegionPrompts.node`)."""
from __future__ import annotations

import contextlib
import functools
import inspect
import math
import numbers
from typing import Callable, Mapping, Optional


class DreamOError(ValueError):
    """A user-facing error, at a node's call or during sampling. ComfyUI shows the message in its error dialog, so it
    says which node and input to look at and what to do. `node` is None until a node names itself (`in_node`)."""

    def __init__(self, node: Optional[str], input_name: str, problem: str, fix: str):
        self.node = node
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        super().__init__(node, input_name, problem, fix)

    def __str__(self) -> str:
        where = f"input '{self.input_name}'" if self.node is None else f"{self.node} (input '{self.input_name}')"
        return f"{where}: {self.problem} Fix: {self.fix}"


def input_error(input_name: str, problem: str, fix: str) -> DreamOError:
    """The error dreamo_ops raises about one input of the node calling it; that node names itself (`in_node`)."""
    return DreamOError(None, input_name, problem, fix)


@contextlib.contextmanager
def in_node(node: str):
    """Around a node's call into dreamo_ops: a DreamOError raised inside without a node names `node`."""
    try:
        yield
    except DreamOError as e:
        if e.node is None:
            e.node = node
        raise


def refuse_unknown_inputs(node: str, given, known) -> None:
    """ComfyUI hands a node every *linked* input a workflow names, declared or not (an API workflow written by
    hand, an old file, a 10th slot): refuse those instead of silently ignoring them."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise DreamOError(node, unknown[0], f"'{unknown[0]}' is not an input of {node} (its inputs are "
                          f"{', '.join(known)}).", "connect the value to one of those inputs, or remove it from the "
                          "workflow (DreamO has nine reference slots: 1 … 9).")


def _is_non_finite(value) -> bool:
    """A real number that is NaN or ±inf (a bool or an int never is)."""
    if not isinstance(value, numbers.Real) or isinstance(value, numbers.Integral):
        return False
    try:
        return not math.isfinite(value)
    except (TypeError, ValueError, OverflowError):
        return True


def refuse_non_finite(node: str, values: Mapping[str, object], ranges: Optional[Callable] = None) -> None:
    """Refuse a NaN or ±inf among a node's inputs. ComfyUI's min/max check lets NaN through (every comparison
    with NaN is false), and a linked input is not checked at all. `ranges(name)` may give (min, max, default)."""
    for name, value in values.items():
        if _is_non_finite(value):
            limits = ranges(name) if ranges is not None else None
            fix = f"set '{name}' to a number"
            if limits is not None:
                low, high, default = limits
                fix += f" from {low:g} to {high:g} (default {default:g})" if None not in (low, high, default) else ""
            raise DreamOError(node, name, f"'{name}' is {value}, not a number.", fix + ".")


def _float_ranges(node_cls) -> Callable:
    def ranges(name):
        try:
            declared = node_cls.INPUT_TYPES()
        except Exception:  # noqa: BLE001 - only the words of the fix depend on it
            return None
        for section in ("required", "optional"):
            spec = declared.get(section, {}).get(name)
            if spec and spec[0] == "FLOAT" and len(spec) > 1:
                opts = spec[1]
                return opts.get("min"), opts.get("max"), opts.get("default")
        return None
    return ranges


def finite_numbers(node_cls):
    """Class decorator for a node: its function refuses NaN and ±inf in any input (FLOAT widgets and numbers
    arriving by link) with a DreamOError naming the node, the input and the fix, before doing anything."""
    function_name = node_cls.FUNCTION
    function = getattr(node_cls, function_name)
    signature = inspect.signature(function)

    @functools.wraps(function)
    def checked(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            return function(self, *args, **kwargs)  # Python's own message for a wrong call
        values = {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                values.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                values[name] = value
        refuse_non_finite(node_cls.NODE_ID, values, _float_ranges(node_cls))
        return function(self, *args, **kwargs)

    checked.refuses_non_finite = True
    setattr(node_cls, function_name, checked)
    return node_cls

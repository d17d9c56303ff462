"""One error type whose message always names the node, the input and the fix."""


class DreamOError(ValueError):
    """A user-facing error. ComfyUI shows the message in its error dialog, so it must say what to do."""

    def __init__(self, node: str, input_name: str, problem: str, fix: str):
        self.node = node
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        super().__init__(f"{node} (input '{input_name}'): {problem} Fix: {fix}")


def refuse_unknown_inputs(node: str, given, known) -> None:
    """ComfyUI hands a node every *linked* input a workflow names, declared or not (an API workflow written by
    hand, an old file, a 10th slot): refuse those instead of silently ignoring them."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise DreamOError(node, unknown[0], f"'{unknown[0]}' is not an input of {node} (its inputs are "
                          f"{', '.join(known)}).", "connect the value to one of those inputs, or remove it from the "
                          "workflow (DreamO has nine reference slots, ref_1 … ref_9).")

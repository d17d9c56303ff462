"""One error type whose message always names the node, the input and the fix."""


class DreamOError(ValueError):
    """A user-facing error. ComfyUI shows the message in its error dialog, so it must say what to do."""

    def __init__(self, node: str, input_name: str, problem: str, fix: str):
        self.node = node
        self.input_name = input_name
        self.problem = problem
        self.fix = fix
        super().__init__(f"{node} (input '{input_name}'): {problem} Fix: {fix}")

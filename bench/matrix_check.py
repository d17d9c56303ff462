"""bench/gpu_matrix.py: the check that each measured row ran what its name says."""
from __future__ import annotations


class CallCheck:
    """Innermost DIFFUSION_MODEL wrapper: records what each model call of a row really carried — its references, DreamO's
    embedding patch, an active routing override — and how many attention calls that override saw, so a row measures
    what its name says (a DreamO row without DreamO's work would be a wrong table, not a fast one)."""

    def __init__(self):
        self.calls = []
        self.pending = []

    def __call__(self, executor, x, timestep, context, y=None, guidance=None, ref_latents=None, control=None,
                 transformer_options={}, **kwargs):
        from comfyui_dreamo.dreamo_ops.flux_wrapper import ConditionEmbeddingPatch
        from comfyui_dreamo.dreamo_ops.routing import RoutedAttention

        patches = (transformer_options.get("patches") or {}).get("post_input") or []
        override = transformer_options.get("optimized_attention_override")
        out = executor(x, timestep, context, y, guidance, ref_latents, control, transformer_options, **kwargs)
        routed = isinstance(override, RoutedAttention) and override.active and override.spec.constrains()
        self.calls.append({"refs": len(ref_latents or []),
                           "embedded": any(isinstance(p, ConditionEmbeddingPatch) for p in patches),
                           "routed": routed, "attention_calls": getattr(override, "calls", None) if routed else None})
        return out

    def summary(self) -> dict:
        return {"model_calls": len(self.calls), "with_references": sum(c["refs"] > 0 for c in self.calls),
                "with_dreamo_embeddings": sum(c["embedded"] for c in self.calls),
                "routed": sum(c["routed"] for c in self.calls),
                "attention_calls_per_routed_call": sorted({c["attention_calls"] for c in self.calls if c["routed"]})}

    def problem(self, row, blocks: int) -> str:
        """What `row` (a matrix_report.Row) ran that its name does not say, or "" when the calls match it."""
        n = len(self.calls)
        if n == 0:
            return "no model call ran"
        want = {"refs": row.refs, "embedded": row.dreamo and row.refs > 0, "routed": row.routing is not None}
        for key, value in want.items():
            got = {c[key] for c in self.calls}
            if got != {value}:
                return f"{key}: expected {value} in every call, saw {sorted(got, key=str)}"
        if row.routing is not None and {c["attention_calls"] for c in self.calls} != {blocks}:
            return f"routing saw {sorted({c['attention_calls'] for c in self.calls})} attention calls, not {blocks}"
        return ""

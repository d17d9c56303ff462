"""Which attention function runs a routed block: the active backend where it can take the folded call, else SDPA.

Routed blocks hand the folded (B, H, L, W) tensors (`routing_bias.fold_channels`) to the backend that would have run
the block — another pack's override or the function ComfyUI chose — through `BACKENDS`, which checks each backend's
first call per head width, dtype and device against PyTorch SDPA and falls back to SDPA where it cannot take it (one
log line per backend).
"""
from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

VERIFY_TOLERANCE = 0.1
"""A backend's first routed call (per head width, dtype and device) is compared with PyTorch SDPA on the same folded
tensors; a relative difference above 10 % — far beyond any low-precision kernel's rounding, far below what a dropped
or misread channel does — refuses it."""

log = logging.getLogger(__name__)


def backend_name(backend) -> str:
    fn = getattr(backend, "__wrapped__", backend)
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


@dataclass
class BackendVerdict:
    usable: bool
    reason: str = ""


class _WarningsOfThisThread(logging.Handler):
    """Collects WARNING-and-above records logged by the current thread while installed on the root logger."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages = []

    def emit(self, record):
        if record.thread == self.thread:
            self.messages.append(record.getMessage())

    def __enter__(self):
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self)


def _first_line(text: str, limit: int = 200) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[:limit] + "…"


class BackendDispatch:
    """Runs routed blocks on the active attention backend where it can take the folded call, else on PyTorch SDPA.

    The active backend is another pack's override when one is chained (SageAttention / KJNodes patches compute
    attention themselves), else the function ComfyUI chose (`func`: sub-quadratic on CPU, SDPA, flash, xformers,
    sage …). It receives the folded (B, H, L, W) tensors with `skip_reshape=True` and no `scale`: `fold_channels`
    scales them for the default W^-0.5. Its first call per (width, dtype, device) is checked against SDPA: a
    backend that raises, returns another shape or other numbers, or logs a warning (it fell back by itself, and
    would on every call) is refused for that key, and one line is logged per backend. Verdicts are kept per
    backend object (weakly: a model's override goes away with the model)."""

    def __init__(self):
        self._weak = weakref.WeakKeyDictionary()
        self._strong = {}  # id → (backend, record) for callables that cannot be weakly referenced

    def record(self, backend) -> dict:
        try:
            rec = self._weak.get(backend)
            if rec is None:
                rec = self._weak[backend] = {"name": backend_name(backend), "verdicts": {}, "logged": False}
            return rec
        except TypeError:
            entry = self._strong.get(id(backend))
            if entry is None or entry[0] is not backend:
                entry = self._strong[id(backend)] = (backend, {"name": backend_name(backend), "verdicts": {},
                                                               "logged": False})
            return entry[1]

    def report(self) -> list[dict]:
        """Every verdict so far: [{backend, width, dtype, device, usable, reason}] (for benchmarks and doctor)."""
        records = list(self._weak.values()) + [r for _, r in self._strong.values()]
        return [{"backend": r["name"], "width": w, "dtype": str(dt).replace("torch.", ""), "device": dev,
                 "usable": v.usable, "reason": v.reason}
                for r in records for (w, dt, dev), v in r["verdicts"].items()]

    def run(self, backend, call, q2, k2, v2, mask, head_dim: int) -> torch.Tensor:
        """(B, H, L, W) attention of the folded tensors: `call(q2, k2, v2)` (the backend) or SDPA."""
        rec = self.record(backend)
        key = (q2.shape[-1], q2.dtype, q2.device.type)
        verdict = rec["verdicts"].get(key)
        if verdict is not None and not verdict.usable:
            return _sdpa(q2, k2, v2, mask)
        out, problem = None, None
        with _WarningsOfThisThread() as warnings:
            try:
                out = call(q2, k2, v2)
            except _OutOfMemory:
                raise
            except Exception as e:  # a backend that cannot take this call: never a crash, never unrouted
                problem = f"it raised {type(e).__name__}: {_first_line(e)}"
        if verdict is None:
            reference = _sdpa(q2, k2, v2, mask)
            if problem is None:
                err = ((out.float() - reference.float()).norm() / reference.float().norm().clamp(min=1e-30)).item()
                if not err <= VERIFY_TOLERANCE:
                    problem = f"its result differs from PyTorch SDPA's by {err:.1%}"
                elif warnings.messages:
                    problem = f"it logged '{_first_line(warnings.messages[0])}' (it falls back by itself)"
            rec["verdicts"][key] = BackendVerdict(problem is None, problem or "")
            if problem is not None:
                self._log(rec, key, head_dim, problem)
                return reference
            return out
        if problem is not None:  # usable so far, but not for this call (another sequence length, say)
            rec["verdicts"][key] = BackendVerdict(False, problem)
            self._log(rec, key, head_dim, problem)
            return _sdpa(q2, k2, v2, mask)
        return out

    @staticmethod
    def _log(rec, key, head_dim, problem):
        if rec["logged"]:
            return
        rec["logged"] = True
        width, dtype, device = key
        log.warning("DreamO routing: the attention backend %s cannot run the routed blocks (%d-wide heads: %d + %d "
                    "routing channels, %s on %s): %s. Those blocks use PyTorch SDPA with the routing folded in; the "
                    "other blocks keep %s. (Logged once.)", rec["name"], width, head_dim, width - head_dim,
                    str(dtype).replace("torch.", ""), device, problem, rec["name"])


_OutOfMemory = getattr(torch, "OutOfMemoryError", getattr(torch.cuda, "OutOfMemoryError", MemoryError))
BACKENDS = BackendDispatch()
"""The process-wide verdicts (one per backend object, width, dtype and device)."""


def _sdpa(q2, k2, v2, mask):
    return F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask)

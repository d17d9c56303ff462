"""Independent references for the routing, written out token by token in float64: the L×L bias the rules give
(cuts as −inf) and plain softmax attention over it. The pack's folded-channel attention is checked against them."""
from __future__ import annotations

import torch


def ref_spans(layout, txt_len):
    spans, start = {}, txt_len + layout.image_count
    for r in layout.refs:
        spans[r.slot] = range(start, start + r.count)
        start += r.count
    return spans


def dense_bias(layout, txt_len, coverage, mode, strength, isolate):
    """The routing bias written out token by token (L×L), −inf for cuts."""
    L = txt_len + layout.total_count
    bias = torch.zeros(L, L, dtype=torch.float64)
    img = range(txt_len, txt_len + layout.image_count)
    spans = ref_spans(layout, txt_len)
    for slot, span in spans.items():
        if slot not in coverage:
            continue
        cov = coverage[slot].reshape(-1)
        for n, j in enumerate(img):
            if mode == "hard":
                value = 0.0 if cov[n] >= 0.5 else float("-inf")
            else:
                value = -strength * (1.0 - float(cov[n]))
            for i in span:
                bias[i, j] = value
                bias[j, i] = value
    if isolate:
        for a, sa in spans.items():
            for b, sb in spans.items():
                if a != b:
                    for i in sa:
                        for j in sb:
                            bias[i, j] = float("-inf")
    return bias


def dense_attention(q, k, v, bias, extra_mask=None):
    s = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5 + bias
    if extra_mask is not None:
        s = s + extra_mask.double()
    return (torch.softmax(s, dim=-1) @ v.double()).float()

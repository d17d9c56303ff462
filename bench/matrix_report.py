"""bench/gpu_matrix.py: one row of the matrix, the table it prints and the JSON file it rewrites after every row."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field


@dataclass
class Row:
    size: int
    name: str
    refs: int = 0
    dreamo: bool = False
    routing: dict | None = None
    weights: str = "bf16"
    backend: str | None = None
    status: str = "pending"
    tokens: int = 0
    sec_per_step: float | None = None
    step_times: list = field(default_factory=list)
    peak_gib: float | None = None
    above_weights_gib: float | None = None
    time_ratio: float | None = None
    memory_ratio: float | None = None
    checks: dict = field(default_factory=dict)
    note: str = ""


HEADER = ("| size | row | weights | attention | tokens | s/step | × plain | peak GiB | above weights GiB | "
          "× plain | status |\n|---|---|---|---|---|---|---|---|---|---|---|")


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def table_line(r: Row) -> str:
    return (f"| {r.size}² | {r.name} | {r.weights} | {r.backend or 'ComfyUI default'} | {r.tokens:,} | "
            f"{fmt(r.sec_per_step, '.3f')} | {fmt(r.time_ratio, '.2f')}{'×' if r.time_ratio else ''} | "
            f"{fmt(r.peak_gib, '.1f')} | {fmt(r.above_weights_gib, '.2f')} | "
            f"{fmt(r.memory_ratio, '.2f')}{'×' if r.memory_ratio else ''} | {r.status} |")


class Report:
    def __init__(self, args, env):
        self.args, self.env = args, env
        self.rows: list[Row] = []
        self.extra = {}

    def emit(self, row: Row):
        self.rows.append(row)
        if not self.args.json:
            print(table_line(row), flush=True)
        self.save()

    def data(self) -> dict:
        from comfyui_dreamo.dreamo_ops import routing_backends

        return {"environment": self.env, "rows": [asdict(r) for r in self.rows],
                "routed_blocks_backends": routing_backends.BACKENDS.report(), **self.extra}

    def save(self):
        if not self.args.json_out:
            return
        tmp = self.args.json_out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data(), f, indent=1, default=str)
        os.replace(tmp, self.args.json_out)

"""Benchmark grids, their results database and the paper-style tables made from it.

- db.py: ResultsDB (SQLite, versioned schema), measure_stage (wall time and peak memory)
- grid.py: GridSpec / load_grid, plan, run_grid, the method runner registry
- tables.py: main_table, cross_arch_table, ipc_vs_table -> Table (.markdown/.csv/.latex)
"""

from meddistill.bench.db import SCHEMA_VERSION, ResultsDB, measure_stage
from meddistill.bench.grid import (
    GridSpec,
    load_grid,
    plan,
    register_runner,
    run_grid,
)
from meddistill.bench.tables import Table, cross_arch_table, ipc_vs_table, main_table

__all__ = [
    "SCHEMA_VERSION",
    "GridSpec",
    "ResultsDB",
    "Table",
    "cross_arch_table",
    "ipc_vs_table",
    "load_grid",
    "main_table",
    "measure_stage",
    "plan",
    "register_runner",
    "run_grid",
]

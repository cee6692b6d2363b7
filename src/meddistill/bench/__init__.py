"""Benchmark grids, their results database and the paper-style tables made from it.

- db.py: ResultsDB (SQLite, versioned schema), measure_stage (wall time and peak memory)
- access.py: why a results database cannot be opened or written (the OS reason, one line)
- claims.py: cells claimed by one process at a time, so several processes share a grid
- spec.py: the grid file (GridSpec, grid_from_dict, load_grid) and its validation
- runners.py: how a method makes a cell's artifact (register_runner, the runner registry)
- plan.py: a grid planned into cells (plan, cell_status, format_status)
- run.py: making the artifacts and training the evaluation networks (run_grid)
- tables.py: main_table, cross_arch_table, ipc_vs_table -> Table (.markdown/.csv/.latex)
"""

from meddistill.bench.db import SCHEMA_VERSION, ResultsDB, measure_stage
from meddistill.bench.plan import plan
from meddistill.bench.run import run_grid
from meddistill.bench.runners import register_runner
from meddistill.bench.spec import GridSpec, load_grid
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

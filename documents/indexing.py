"""Building the chunks' HNSW index within the machine's means.

pgvector builds an HNSW graph in `maintenance_work_mem`; a graph that does not fit is finished on disk, which
is many times slower (a fixed 1 GB took a 1,000,000-chunk build past 490,000 rows and then never finished on
this 2-core machine). The build settings are therefore derived from the index it will build and the machine
it runs on: memory for the whole graph plus a margin, but never more than half of what is free, and one
parallel worker per core beside the leader.

`DOCUMENTS_INDEX_BUILD_MEMORY` (bytes, 0 = derive) overrides the memory when PostgreSQL runs on another
machine than the process that builds (the free memory measured here is this machine's).
"""

import os
from dataclasses import dataclass

import psutil

MB = 1024 * 1024
GB = 1024 * MB

# pgvector's in-memory HNSW element: the vector (4 bytes a dimension) plus its neighbour lists (2m on layer 0,
# m on the few upper layers, 6-byte item pointers with their distances) and the element's own bookkeeping.
ELEMENT_OVERHEAD_BYTES = 160
MARGIN = 1.25  # the graph's size is an estimate: room for its upper layers and allocator slack


@dataclass(frozen=True)
class BuildSettings:
    maintenance_work_mem_mb: int
    max_parallel_maintenance_workers: int
    graph_bytes: int  # the estimated size of the graph being built
    fits: bool  # False: even half the free memory is too small, and the build will spill to disk

    def statements(self) -> list[str]:
        """`SET` statements for the session (or `SET LOCAL` in a transaction) that runs CREATE INDEX."""
        return [
            f"SET maintenance_work_mem = '{self.maintenance_work_mem_mb}MB'",
            f"SET max_parallel_maintenance_workers = {self.max_parallel_maintenance_workers}",
        ]


def hnsw_graph_bytes(*, rows: int, dimensions: int, m: int) -> int:
    return rows * (4 * dimensions + 3 * m * 10 + ELEMENT_OVERHEAD_BYTES)


def build_settings(
    *, rows: int, dimensions: int, m: int, available_bytes: int | None = None, cores: int | None = None,
    memory_override: int = 0,
) -> BuildSettings:  # fmt: skip
    available = psutil.virtual_memory().available if available_bytes is None else available_bytes
    cores = (os.cpu_count() or 1) if cores is None else cores
    graph = hnsw_graph_bytes(rows=rows, dimensions=dimensions, m=m)
    wanted = max(64 * MB, int(graph * MARGIN))
    ceiling = memory_override or max(64 * MB, available // 2)
    memory = min(wanted, ceiling)
    return BuildSettings(
        maintenance_work_mem_mb=memory // MB,
        # The leader builds too: one worker per further core (PostgreSQL's own cap is max_worker_processes).
        max_parallel_maintenance_workers=max(0, min(cores - 1, 7)),
        graph_bytes=graph,
        fits=memory >= graph,
    )

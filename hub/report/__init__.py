"""The offline ablation report over many runs: runs.py finds and reads them, blocks.py decides what is
compared with what (within a data set and task only), stats.py tests it, render.py writes it."""
from hub.report.blocks import (
                               BLOCKS,
                               Report,
                               Table,
                               block_axes,
                               build_report,
                               build_tables,
                               rank_summaries,
                               split_blocks,
                               varying_axes,
)
from hub.report.render import (
                               markdown,
                               mean_curve,
                               pair_cells,
                               summary_cells,
                               table_cells,
                               text_summary,
                               write_report,
)
from hub.report.runs import Run, WandbView, axis_value, cross_checks, expand, find_runs
from hub.report.stats import compare, describe, fmt, holm, paired, ranks, welch

__all__ = ["BLOCKS", "Report", "Run", "Table", "WandbView", "axis_value", "block_axes", "build_report",
           "build_tables", "compare", "cross_checks", "describe", "expand", "find_runs", "fmt", "holm", "markdown",
           "mean_curve", "pair_cells", "paired", "rank_summaries", "ranks", "split_blocks", "summary_cells",
           "table_cells", "text_summary", "varying_axes", "welch", "write_report"]

"""Reports of a scan: plotly figures, the self-contained HTML page, and W&B logging.

Example:
    >>> from neurolens_lightning.report import write_report, build_figures   # doctest: +SKIP
    >>> write_report(result.to_dict(), "reports/minilm-royalty/report.html")  # doctest: +SKIP
"""

from neurolens_lightning.report.figures import (
    FIGURE_BUILDERS,
    ablation_figure,
    build_figures,
    candidate_status,
    emergence_figure,
    heatmap_figure,
    heatmap_reduction,
    layer_distribution_figure,
    layer_profile,
    sankey_figure,
    scatter_figure,
)
from neurolens_lightning.report.page import render_report, write_report
from neurolens_lightning.report.compare_page import render_comparison
from neurolens_lightning.report.wandb_logging import log_scan_to_wandb, wandb_run_for

__all__ = [
    "write_report", "render_report", "render_comparison", "log_scan_to_wandb", "wandb_run_for", "build_figures",
    "FIGURE_BUILDERS", "heatmap_figure", "heatmap_reduction", "scatter_figure", "sankey_figure", "ablation_figure",
    "emergence_figure", "layer_distribution_figure", "layer_profile", "candidate_status",
]

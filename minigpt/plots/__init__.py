"""Every figure the chapters and the CLI draw, one module per part of the book (style, training, the
chapter's table, routing, each break, the sweep); import them from here."""
from .break1 import plot_cka_blocks, plot_matched, plot_per_byte, plot_reliability  # noqa: F401
from .break2 import plot_collapse_curve, plot_collapse_routing  # noqa: F401
from .routing import (plot_confusion, plot_gate_grid, plot_hybrid_routing, plot_mean_weight_heatmaps,  # noqa: F401
                      plot_retrained, plot_routed_text, plot_token_losses, plot_token_routing)
from .style import DOMAIN_COLORS, FROZEN_COLOR, OUTCOME_COLORS, STATUS_MARKERS  # noqa: F401
from .sweep import plot_freeze_grid, plot_freeze_sweep  # noqa: F401
from .table import (plot_cross_domain, plot_gap_by_position, plot_gap_curves, plot_intervals,  # noqa: F401
                    plot_mixed_losses, plot_oracle_band)
from .training import (plot_delta_vs_base, plot_loss_curves, plot_router_histories, plot_seed_curves,  # noqa: F401
                       plot_targets, plot_trunk_crown)

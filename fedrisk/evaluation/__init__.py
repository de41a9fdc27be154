"""Credit metrics, uplift and confidence intervals."""

from fedrisk.core.metrics import METRICS, credit_metrics, ks_statistic

__all__ = ["METRICS", "credit_metrics", "ks_statistic"]

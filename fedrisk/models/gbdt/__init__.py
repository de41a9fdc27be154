"""Gradient-boosted trees: per-holder bins, histograms, depth-wise trees on a histogram provider, boosting.

The same tree builder runs pooled, horizontal (banks' histograms summed) and vertical (each holder's
histograms side by side; see `fedrisk.protocol.secureboost`), and reproduces xgboost's `hist` trees, which
the siloed and centralized baselines train (`baseline.train_xgboost`).
"""

from fedrisk.models.gbdt.baseline import XGBoostModel, train_xgboost
from fedrisk.models.gbdt.binning import Binner, ColumnBins
from fedrisk.models.gbdt.booster import BoostingSession, BoostResult, GBDTModel, boost, fit_pooled
from fedrisk.models.gbdt.histogram import HistogramProvider, LocalHistograms, Split, SummedHistograms
from fedrisk.models.gbdt.params import GBDTParams
from fedrisk.models.gbdt.tree import Tree, grow_tree

__all__ = [
    "Binner",
    "BoostResult",
    "BoostingSession",
    "ColumnBins",
    "GBDTModel",
    "GBDTParams",
    "HistogramProvider",
    "LocalHistograms",
    "Split",
    "SummedHistograms",
    "Tree",
    "XGBoostModel",
    "boost",
    "fit_pooled",
    "grow_tree",
    "train_xgboost",
]

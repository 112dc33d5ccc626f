"""Risk answers from a :class:`~ltvsim.SimulationResult`.

* :mod:`ltvsim.risk.waterfall` - who absorbs each path's realised loss: a reserve fund
  topped up by fees, tranches by seniority, the senior lender;
* :mod:`ltvsim.risk.measures` - mean, VaR and ES of any per-path quantity with standard
  errors and confidence intervals, attachment probabilities, liquidations at risk;
* :mod:`ltvsim.risk.segments` - per-loan probability of liquidation and expected loss,
  added up by segment of the book.
"""
from .measures import (
    Measure,
    es_measure,
    liquidations_at_risk,
    mean_measure,
    path_quantity,
    probability,
    reference_prices,
    risk_measures,
    tranche_table,
    var_measure,
)
from .segments import SegmentTable, loan_measures, segment_keys, segment_table
from .waterfall import DEFAULT_STRUCTURE, CapitalStructure, Waterfall, result_waterfall, waterfall

__all__ = [
    "DEFAULT_STRUCTURE",
    "CapitalStructure",
    "Measure",
    "SegmentTable",
    "Waterfall",
    "es_measure",
    "liquidations_at_risk",
    "loan_measures",
    "mean_measure",
    "path_quantity",
    "probability",
    "reference_prices",
    "result_waterfall",
    "risk_measures",
    "segment_keys",
    "segment_table",
    "tranche_table",
    "var_measure",
    "waterfall",
]

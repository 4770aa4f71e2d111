"""CalculationService: calculation formulas (:mod:`.formulas`) and their dry run
(:mod:`.testing`). Validation and mapping only; the SQL is in
``store/calculation_formulas.py``, evaluation in ingest's native core."""

from __future__ import annotations

from lifebox_grpc.services.calculations.formulas import FormulaRpcs
from lifebox_grpc.services.calculations.testing import TestRpcs

__all__ = ["CalculationServicer"]


class CalculationServicer(FormulaRpcs, TestRpcs):
    """The CalculationService handlers."""

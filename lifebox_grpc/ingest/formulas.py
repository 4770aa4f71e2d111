"""The formulas a batch evaluates (calculated metrics, issue 17), compiled once per version.

Every batch reads the (id, version) of its tenants' enabled formulas in one small query
(the version check), so a formula created, edited, disabled or deleted before a reading
arrives is what that reading is evaluated with: no TTL to wait out. Compiling is what is
cached: an :class:`~lifebox_grpc.native.Expression` per (id, version), and the native
:class:`~lifebox_grpc.native.FormulaSet` per distinct list of them, so an unchanged set costs
the query and a dictionary lookup per batch.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from lifebox_grpc.native import Expression, ExpressionError, FormulaSet
from lifebox_grpc.store.calculation_formulas import EnabledFormula, enabled_formulas

log = logging.getLogger(__name__)

Key = tuple[uuid.UUID, int]  # (formula id, version)


@dataclass(frozen=True)
class BatchFormulas:
    """The compiled formulas of a batch and who they are (``formulas[i]`` is the set's i)."""

    native: FormulaSet
    formulas: tuple[EnabledFormula, ...]


class FormulaCache:
    """Compiled formulas by (id, version); bounded by the formulas that exist."""

    def __init__(self, budget_us: int) -> None:
        self.budget_us = budget_us
        self._expressions: dict[Key, Expression | None] = {}
        self._sets: dict[tuple[Key, ...], BatchFormulas] = {}

    async def for_clients(
        self, conn: asyncpg.Connection, client_ids: Iterable[uuid.UUID]
    ) -> BatchFormulas | None:
        """The enabled formulas of these tenants, as they are now; None when there are none."""
        clients = list(set(client_ids))
        if not clients:
            return None
        rows = await enabled_formulas(conn, clients)
        if not rows:
            return None
        keys = tuple((f.id, f.version) for f in rows)
        cached = self._sets.get(keys)
        if cached is not None:
            return cached
        usable = [(f, e) for f in rows if (e := self._expression(f)) is not None]
        native = FormulaSet(
            [
                (
                    f.id.bytes,
                    f.version,
                    f.client_id.bytes,
                    None if f.device_id is None else f.device_id.bytes,
                    f.device_type,
                    f.name,
                    f.unit,
                    e,
                )
                for f, e in usable
            ],
            self.budget_us,
        )
        built = BatchFormulas(native, tuple(f for f, _ in usable))
        if len(self._sets) > 256:  # sets of every tenant mix seen; keep the cache small
            self._sets.clear()
            live = {(f.id, f.version) for f in rows}
            self._expressions = {k: v for k, v in self._expressions.items() if k in live}
        self._sets[keys] = built
        return built

    def _expression(self, formula: EnabledFormula) -> Expression | None:
        key = (formula.id, formula.version)
        if key not in self._expressions:
            try:
                self._expressions[key] = Expression(formula.expression)
            except ExpressionError:
                # The API checks every expression it stores; one written around it is
                # skipped (logged once per version), never a crash of the batch.
                log.error("stored formula does not check", extra={"formula_id": str(formula.id)})
                self._expressions[key] = None
        return self._expressions[key]

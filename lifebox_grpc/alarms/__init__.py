"""Alarm rules at work: what a rule's condition is (:mod:`.conditions`), how one rule moves on
one device (:mod:`.machine`), and the ingest-side evaluator and sweeper that apply them to
committed readings (:mod:`.evaluator`, :mod:`.sweeper`)."""

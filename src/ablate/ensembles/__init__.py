"""Ensembles and weight averaging: snapshot collection, EMA/SWA wiring, prediction averaging.

Scoring and probability averaging live in ``ablate.evaluation`` so every kind of ensemble is scored by one code path.
"""

"""Offline replay of recorded runs for researchers: import plant logs, replay decisions of a
model and optimizer version, run counterfactual policies on forked twins, write reports.

Imports point one way: `api` may use `replay`; `replay` uses `optimizer`, `models` and `twin`.
"""

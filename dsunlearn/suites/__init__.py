"""Benchmarks ("suites"): each one's data, evaluation, metrics and headline summary.

A suite package (`suites/tofu/`) holds everything specific to one benchmark; the unlearning loop, objectives
and engine never import from here except through the recipes.
"""

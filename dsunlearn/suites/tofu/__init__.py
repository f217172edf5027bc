"""TOFU (Maini et al. 2024): fictitious-author QA, its eval-log format and its official metrics.

Recipes use it as a `Suite` (``suite.TofuSuite``, through ``dsunlearn.suites.get_suite("tofu")``).
"""

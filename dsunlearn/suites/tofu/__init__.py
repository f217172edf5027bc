"""TOFU (Maini et al. 2024): fictitious-author QA, its eval-log format and its official metrics."""

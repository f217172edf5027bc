"""UIPE (arXiv 2503.04693): exact parameter deltas and the extrapolation theta_o + (1 + alpha) delta."""

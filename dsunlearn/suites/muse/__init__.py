"""MUSE (Shi et al. 2024, swj0419/muse_bench): machine unlearning six-way evaluation on News and Books."""

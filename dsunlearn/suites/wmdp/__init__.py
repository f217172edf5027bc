"""WMDP (Li et al. 2024): hazardous-knowledge multiple choice (bio, cyber, chem) and MMLU as utility."""

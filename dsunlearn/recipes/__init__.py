"""Recipes: the jobs behind the commands (finetune, unlearn, offline G-effect, UIPE sweep, demo)."""

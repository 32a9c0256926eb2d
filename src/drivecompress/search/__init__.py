"""Architecture search (Optuna, multi-objective, int8 latency measured on the target)."""

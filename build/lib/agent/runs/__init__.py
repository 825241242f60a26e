"""A run's bookkeeping: checkpoints, the metrics log, background evaluations and videos, and safe writes."""

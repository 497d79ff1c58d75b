"""Using a model with its adapters: generation side by side (and, per task, evaluate / predict)."""

"""Detection wiring (thresholds, early decisions, anomaly models), the alert lifecycle, CAP messages, threshold rules, replay of recorded data and the terminal feed."""

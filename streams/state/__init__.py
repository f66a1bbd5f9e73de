"""Event-time windows per district and the vital-sign indices computed from them."""

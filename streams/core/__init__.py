"""The foundations every other package builds on: the city's configuration, the worker's settings, the messages on every topic, the Prometheus metrics, and table state as versioned documents."""

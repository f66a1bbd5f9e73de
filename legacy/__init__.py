"""What only converting the state of earlier releases needs; the worker never imports it."""

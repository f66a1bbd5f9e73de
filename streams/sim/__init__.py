"""The simulated city and the demo that runs it against the embedded broker."""

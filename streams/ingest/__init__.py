"""From a raw input record to a validated, unit-normalised, de-identified reading, or a dead letter that says why."""

"""Pure detection logic: no Faust, Kafka or I/O."""

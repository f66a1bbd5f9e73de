"""Everything that talks to Kafka: the Faust worker, the input feed, topic creation, the API's and notifications' consumers, state migration, and the embedded broker with its workarounds."""

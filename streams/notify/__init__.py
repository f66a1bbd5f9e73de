"""Who is told about an alert and how: routing, grouping and escalation, payload formats, webhook delivery and responder links."""

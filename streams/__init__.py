"""Streaming side of cityvitals: topics, schemas, agents, tables, web and CLI."""

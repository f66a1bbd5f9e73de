"""The HTTP API and operator console: routes, authentication and scopes, the alert store the API reads."""

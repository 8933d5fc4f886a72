"""The HTTP API: app factory, routes, dependencies, errors."""

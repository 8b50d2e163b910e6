"""The API's routes, one module per noun: plugins, sessions, ingress, system (health, metrics,
OpenAPI, dashboard). Each module exports `routes`."""

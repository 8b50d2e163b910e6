"""The API's routes, one module per noun: plugins, sessions, ingress, webhooks, system (health, metrics,
OpenAPI, dashboard). Each module exports `routes`."""

"""jobclass application: settings, database, services, HTTP API and CLI."""

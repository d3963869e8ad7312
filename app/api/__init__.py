"""HTTP routers: they translate requests to service calls and results to responses, nothing more."""

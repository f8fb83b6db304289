"""HTTP edges every service shares: JSON errors without tracebacks, token authentication and roles."""

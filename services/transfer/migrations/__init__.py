"""The transfer service's schema migrations."""

"""The services of a site, in the order of their HTTP ports (http_base_port + index); importing it costs nothing."""

SERVICES = ("ingest", "catalog", "transfer", "scheduler", "monitor")

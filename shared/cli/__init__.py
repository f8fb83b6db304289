"""The `obsflow` command line."""

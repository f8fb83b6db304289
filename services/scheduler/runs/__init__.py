"""Runs of workflows: triggered by events or requests, persisted as jobs and attempts, driven by a dispatcher."""

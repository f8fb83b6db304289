"""Evaluating orders into transfers, and sending transfers' files to peers in batches (the leader loop)."""

"""The ingress: verifies signed GitHub deliveries and appends them to the event log."""

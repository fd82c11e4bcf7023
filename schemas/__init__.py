"""Schemas: the delivery envelope, the GitHub payload models hookstream reads, settings."""

"""The identity processor: who is who, from links and deliveries (DESIGN.md §8)."""

"""The check-run processor: a GitHub check run per dispatched workflow run (DESIGN.md §7)."""

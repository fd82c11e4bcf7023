"""Processors: one Faust app per projection of the event log.

Sub-packages: triggers, checks, identity, insights (DESIGN.md §1).
"""

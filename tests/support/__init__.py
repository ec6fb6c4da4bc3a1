"""Helpers shared by the integration tests (not fixtures: plain classes and functions)."""

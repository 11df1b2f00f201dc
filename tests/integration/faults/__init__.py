"""Handlers and process control for the fault tests (imported by worker processes too)."""

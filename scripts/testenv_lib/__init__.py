"""The machinery behind scripts/testenv (standard library only)."""

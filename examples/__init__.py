"""Runnable FlowKit examples; see examples/etl/README.md."""

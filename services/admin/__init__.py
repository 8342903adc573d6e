"""The `ferry` admin CLI: one module per command group, assembled in `cli`."""

"""What people look at: markdown tables and matplotlib PNGs, for Dagster metadata, artifacts and the CLI.

The lowest layer beside storage: plain values in, strings and PNG bytes out;
nothing here knows about configs, artifacts or Dagster.
"""

"""Command-line jobs that build and analyse runs: `python -m precompute --help`."""

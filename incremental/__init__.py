"""incremental: incremental learning with partial network sharing (clone-and-branch), on real data."""

__version__ = "0.1.0"

"""promptsweep.search."""

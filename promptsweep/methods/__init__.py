"""promptsweep.methods."""

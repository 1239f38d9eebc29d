"""promptsweep.storage."""

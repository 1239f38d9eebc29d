"""promptsweep.dashboards."""

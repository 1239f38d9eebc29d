"""Package data: the embedded default job specs (YAML), loaded by ``promptsweep.search.default_spec``."""

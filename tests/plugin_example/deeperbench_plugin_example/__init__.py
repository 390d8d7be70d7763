"""An example deeperbench plugin: one workload module, registered by its entry point (see pyproject.toml)."""

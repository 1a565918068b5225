"""The shipped run configs. In a clone they are configs/*.yaml; a wheel installs this folder as
the package `rogueray_configs` (pyproject.toml), where `cluster.config.configs_dir` finds it."""

"""A plugin that fails at import: the registry must report it by name and keep the others."""

raise RuntimeError("this plugin is broken on purpose")

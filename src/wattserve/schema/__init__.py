"""The one declaration of a scenario: pydantic models that the CLI, YAML files, the simulator and
the runtime all read. Nothing else re-declares these fields."""

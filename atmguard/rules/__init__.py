"""The rule language: YAML rules validated with pydantic, compiled to durable_rules."""

"""The ground floor: contracts, errors, YAML positions, settings; imports nothing else of atmguard."""

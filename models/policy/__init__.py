"""models/policy."""

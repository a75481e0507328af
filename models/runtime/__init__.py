"""models/runtime."""

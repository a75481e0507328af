"""models/perception."""

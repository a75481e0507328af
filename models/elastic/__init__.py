"""models/elastic."""

"""Equal-budget comparison of recipes with seeded finals and intervals (``python -m sslray.compare``)."""

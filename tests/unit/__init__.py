"""Fast tests: no Ray, no store (`make test-fast`)."""

"""A local GitHub API for the tests: every request checked against GitHub's OpenAPI description."""

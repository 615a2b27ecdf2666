"""Fixtures shared by the suite live in tests/fixtures/, one module per real part."""

pytest_plugins = [
    "tests.fixtures.docker_engine",
    "tests.fixtures.git_remotes",
    "tests.fixtures.s3_server",
]

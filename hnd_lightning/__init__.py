"""hnd-lightning: Head Network Distillation for split computing."""

# The one place the version lives: pyproject.toml reads it (`[tool.setuptools.dynamic]`), the edge server
# reports it in its metadata, and CHANGELOG.md names it.
__version__ = "0.2.0"

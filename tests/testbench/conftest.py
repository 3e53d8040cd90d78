"""The testbench plugin is tested by running pytest on small test files (pytest's `pytester`)."""

pytest_plugins = ["pytester"]

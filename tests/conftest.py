"""Test-suite wide settings: makes ``tests/`` importable (``reference_data``)."""

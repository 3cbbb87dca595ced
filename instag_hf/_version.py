"""The version of instag_hf, in one place (setup.py reads it as text)."""

__version__ = "0.1.0"

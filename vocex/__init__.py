"""vocex: real-time vocal extraction and removal."""

__version__ = "0.1.0"

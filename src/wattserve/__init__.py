"""wattserve: serve large language models under a power budget."""

__version__ = "0.1.0"

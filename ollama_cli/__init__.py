"""ollama-q: a durable job queue in front of Ollama."""

__version__ = "0.1.0"

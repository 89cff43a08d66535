"""Clients that speak to backends: Ollama's native API (`base.py`) and OpenAI-compatible servers (`openai.py`)."""

"""Other APIs' shapes, mapped to and from ours in one place (`openai.py`)."""

"""What the project draws from the store for people: `snapshot.py` is what `info` shows."""

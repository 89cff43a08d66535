"""Settings: where each value a run reads from outside comes from, and what it means."""

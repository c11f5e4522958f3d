"""Discrete-event simulator of a GPU cluster serving LLMs under power caps."""

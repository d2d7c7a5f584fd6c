"""Narrative reports: prompts, Anthropic Message Batches and the loopback fake the tests and demo use."""

"""Helpers the tests share: imported by tests, never a test module themselves."""

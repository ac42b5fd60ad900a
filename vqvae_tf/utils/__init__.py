"""Helpers without a stage of their own: file I/O, checks, distribution, pictures, progress."""

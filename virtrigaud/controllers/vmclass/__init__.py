"""The VMClass controller: validation and usage."""

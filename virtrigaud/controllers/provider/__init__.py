"""The Provider controller: health, capabilities, usage and deletion of a Provider."""

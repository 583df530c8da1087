"""What every controller shares: reading dependencies, writing status and finalizers."""

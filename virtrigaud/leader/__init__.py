"""Leader election, the VM informer, the hash ring and the coordinator that routes keys."""

"""The VMSnapshot controller: snapshots of one VM, taken once or on a schedule."""

"""The VMClone controller: a new VirtualMachine cloned from an existing one."""

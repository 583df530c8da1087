"""The VirtualMachine controller: make the hypervisor match the object, report what it sees."""

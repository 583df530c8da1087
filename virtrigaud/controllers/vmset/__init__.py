"""The VMSet controller: N VirtualMachines from one template, scaled and rolled."""

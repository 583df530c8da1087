"""The VMImage controller: is the image there on each Provider its VMs use."""

"""The VMNetworkAttachment controller: does the network exist on each Provider its VMs use."""

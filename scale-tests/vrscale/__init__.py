"""The VirtRigaud scale suite: scenarios that drive the dev stack and the sharded controller
and report what they measured against the project's targets (report.json + PNG plots)."""

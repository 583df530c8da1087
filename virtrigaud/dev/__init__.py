"""The local dev stack: real servers on loopback for tests and demos.

`stack.DevStack(state_dir)` starts and stops the parts (`kube`: etcd + kubelite; `vcsim`;
`libvirt`: a private libvirtd serving the test driver; `proxmox`: fakepve; `redis`;
`ray`), one module each; `info.StackInfo` is what any process reads back from
``state_dir/stack.json``; `cli.dev_app` is `virtrigaud dev`.
"""

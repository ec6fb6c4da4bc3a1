"""The `kubelock` command and the drop-in `rlock`, `runlock` and `rlock-heartbeat` commands."""

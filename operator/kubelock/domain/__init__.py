"""The pure core of kubelock: arbitration, queues, leases, fencing and the wait-for graph.

Nothing here imports kopf, a Kubernetes client or performs I/O. Time is always passed in
(`now`), and every decision is returned as a frozen value carrying a named reason, so the same
reason string feeds the claim's condition, its Event and the SDK's error.
"""

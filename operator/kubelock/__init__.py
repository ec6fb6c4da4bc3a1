"""kubelock: exclusive, fenced, deadlock-aware locks for concurrent agents on Kubernetes."""

__version__ = "0.1.0"

"""kubelock's API types (kubelock.dev/v1alpha1) and the CRDs generated from them."""

"""The thin Kubernetes adapter: credentials, an async REST client, and the mapping between API
objects and the domain's values. Only this layer talks to the Kubernetes API."""

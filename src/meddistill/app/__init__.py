"""The application layer: the jobs behind the commands and the Python API.

Resolved configs in, run folders out. Each job is a dataclass validated once at the edge
(meddistill.app.config), resolved once (device, DSA strategy, method config), then run.
Above methods/, training/ and experts/; below bench/, report/, the CLI and the public API.
"""

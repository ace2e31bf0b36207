"""Every preset as configured, offline, with only sizes shrunk: a local hub mirror and the miniature scale."""

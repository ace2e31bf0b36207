"""The data domain: hub snapshots, the raw HH records, the preference splits and the held-out eval prompts."""

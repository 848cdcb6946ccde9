"""The cluster layer: Ray Jobs submission, job listing, logs and pulling run directories.
Imports the core and search layers (the job entrypoint runs a search through the API)."""

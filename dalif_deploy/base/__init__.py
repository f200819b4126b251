"""Layer 0, the base: errors, safe files and safe pickle scanning, schema, resources, encoding,
geometry, printed wording, device and sharding. Imports nothing else of the project."""

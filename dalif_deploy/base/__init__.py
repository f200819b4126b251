"""Layer 0, the base: errors, safe files, schema, resources, encoding, geometry, device and
sharding. Imports nothing else of the project."""

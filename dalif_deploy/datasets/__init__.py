"""Layer 2, data: loaders, event-camera file formats, event sets."""

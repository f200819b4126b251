"""Layer 6, verification and reports: verify's stages and pipeline, files as given, the verdict,
the HTML report and its plots, and what a file holds (inspect)."""

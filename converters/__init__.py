"""Format changes: torch -> NIR, NIR -> torch, NIR -> fixed-point program, torch -> ONNX."""

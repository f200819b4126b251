"""Layer 1, the fixed-point program: types and the .fxp format, hardware limits, constraint rules,
Lava's integer arithmetic, timing, the cost model and its hardware figures."""

"""Layer 1, the fixed-point program: its types (program.py) and the .fxp file format
(fxp_format.py), hardware limits, constraint rules, Lava's integer arithmetic, timing, the cost
model and its hardware figures."""

"""Layer 3, the NIR intermediate representation: safe reading, topology, shape inference, the
operation table and its float building blocks."""

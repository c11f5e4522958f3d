"""Named scenarios and policy comparisons (the layer above control and the back ends)."""

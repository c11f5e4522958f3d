"""What a run leaves behind, as plain data: per-request records, the ITL histogram, per-GPU and
per-instance traces. It sits below both the simulator (which fills it) and metrics/ (which reads
it), so neither imports the other."""

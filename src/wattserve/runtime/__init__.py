"""The real runtime: PyTorch engine workers, an OpenAI-compatible router, and a GPU power agent.

Needs the `runtime` extra (torch). Nothing here is imported by the simulator or the control plane.
"""

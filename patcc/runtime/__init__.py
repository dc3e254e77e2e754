"""Runtime: the numpy reference interpreter (and, later, loaders of compiled models)."""

from patcc.runtime.interpreter import apply_activation, bind_inputs, evaluate, run

run_reference = run

__all__ = ["apply_activation", "bind_inputs", "evaluate", "run", "run_reference"]

"""Backends render a planned IR graph for a target (LLVM for CPUs, OpenCL for GPUs)."""

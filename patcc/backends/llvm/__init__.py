"""The LLVM backend: kernels in llvmlite IR, a thread pool, one shared object per model."""

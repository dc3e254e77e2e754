"""What the tests share: helpers, the ONNX model generators, and the tier and budget
settings. The test modules stay in ``tests/`` (pytest collects ``tests/test_*.py``);
nothing here is collected. ``tests/`` is on ``sys.path`` (pytest puts it there for
``tests/conftest.py``), so a test module writes ``from support.compare import
assert_close``.

* ``compare``: the 1e-4 rule (``assert_close``), onnxruntime as a reference, runs at
  several thread counts that must agree bitwise.
* ``targets``: the x86 and CPU tags the tests build for, and which this machine runs.
* ``tools``: skipping (failing under ``CI=true``) when an external tool is missing.
* ``reference_models``: which reference architectures and variants a test runs.
* ``fuzz``: hypothesis example counts (``PATCC_FUZZ_EXAMPLES``).
* ``cli``: the form of a command-line user error.
* ``onnx_gen``: hypothesis strategies that build small random ONNX models.
* ``onnx_node``: ONNX's own node tests made into patcc cases.
* ``cli_fuzzer``: the hostile-model fuzzer of the command line (``test_fuzz.py``;
  ``python -m tests.support.cli_fuzzer run`` for a long run).
"""

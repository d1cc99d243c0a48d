"""Benchmarks: commands that measure and write their figures (not tests). See the Makefile's bench-* targets.

Each is ``python -m benchmarks.<name>`` (``--help`` lists its options); figures go to DuckDB files under
``var/bench/``, reports to ``docs/bench_<name>.md``:

- ``teacher``: every offline teacher x mode against the paper's way (``make bench-teacher``);
- ``student``: student inference and training speed, the learning curve (``make bench-student``);
- ``quality`` (with ``quality_data``, ``quality_students``): the students' quality-cost frontier
  (``make bench-quality``);
- ``scale``: the local engine against Ray, and the loader (``make bench-scale``);
- ``teacher_prefix``: the teacher's prefix KV cache, interleaved A/B;
- ``common``: what they share (paths, the IMDb folder, the log line, the machine's state).
"""

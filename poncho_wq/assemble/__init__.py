"""Stage 4, assemble: what one task needs on a worker, put together from the earlier stages' results.

A task's environment is a base (an engine's tarball, :mod:`poncho_wq.engines`) plus the user's own code packed
apart as content-keyed layers (:mod:`.layers`), or a project directory built as a wheel (:mod:`.project`);
:class:`~poncho_wq.assemble.environment.Environment` resolves a script, spec, project or tarball into those
pieces once per process. The result is a set of local files; how they reach a worker is the next stage's job.
"""

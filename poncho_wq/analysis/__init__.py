"""Stage 1 of the pipeline, analysis: what do the user's scripts need, read from the code and the installation.

The scripts are scanned statically (:mod:`.scan`), their imports resolved against one model of the installed
environment (:mod:`.installation`), mapped to the distributions that provide them and pinned (:mod:`.pins`),
closed over their installed dependencies (:mod:`.closure`, :mod:`.import_extras`), and returned as an
:class:`~poncho_wq.analysis.analyzer.Analysis` whose lock is a :class:`~poncho_wq.spec.Spec`. Nothing here builds,
packs or ships anything: this stage only reads, so every later stage can take its answer as a plain value.
"""

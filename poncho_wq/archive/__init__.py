"""Stage 2, archive: how a filled prefix becomes a reproducible tarball, what the tarball says about itself, and
where tarballs are kept.

:mod:`.pack` writes the relocatable ``.tar.gz`` (conda-pack's packer, our deterministic writer), :mod:`.floor` and
:mod:`.lock` write what the archive carries about itself (the oldest worker it runs on; where each distribution
came from and why), :mod:`.cache` is the content-addressed store the tarballs are published into, and
:mod:`.safetar` extracts archives that are not ours without trusting them. These modules know nothing of engines
or tasks: the engines (the next stage) fill a prefix and hand it here.
"""

"""Stage 5, deliver: how the assembled files reach the workers.

As cached task inputs (:mod:`.files` for the user's explicit ``files=``), or published over HTTP and fetched by the
worker with checks (:mod:`.publish`, :mod:`.fetch`), plus the manager's own ``ndcctools`` shipped as a wheel for
worker-side code that imports it (:mod:`.ndcctools_wheel`). The Work Queue / TaskVine task classes at the package
root (:mod:`poncho_wq.task`, :mod:`poncho_wq.taskvine`) attach what this stage returns.
"""

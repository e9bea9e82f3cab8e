"""A task script: imports a third-party package (humanize) that the workers' own Python does not have."""

import sys

import humanize

n = int(sys.argv[1])
print("task {:2d}: {} bytes is {}".format(n, 2 ** (10 + n), humanize.naturalsize(2 ** (10 + n), binary=True)))

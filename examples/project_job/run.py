"""The job: reads job.yaml and the model from its working directory (the task sandbox on a worker)."""

import json
import sys

import transforms

with open("job.yaml") as f:
    name = dict(line.split(": ", 1) for line in f.read().splitlines() if ": " in line)["job_name"]
with open("model.json") as f:
    model = json.load(f)
print("{}: input {} -> {}".format(name, sys.argv[1], transforms.score(int(sys.argv[1]), model)))

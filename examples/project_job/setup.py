"""A Beam/Klio-style job directory: the job's modules, its data files and its dependencies, declared once."""

from setuptools import setup

setup(
    name="example-job",
    version="0.1",
    py_modules=["run", "transforms"],
    install_requires=["humanize>=4"],
    # Klio's layout: the job's config and model next to the job, read from the working directory.
    data_files=[(".", ["job.yaml", "model.json"])],
)

"""Small job projects the end-to-end tests submit: a script and the local package it imports."""

import os


def job_project(root, job, mylib_fmt):
    """*root* (made) holding ``job.py`` (*job*) and the local package ``mylib`` with ``mylib/fmt.py`` (*mylib_fmt*);
    returns *root*."""
    os.makedirs(os.path.join(str(root), "mylib"))
    for rel, text in (("job.py", job), ("mylib/__init__.py", ""), ("mylib/fmt.py", mylib_fmt)):
        with open(os.path.join(str(root), rel), "w") as f:
            f.write(text)
    return root

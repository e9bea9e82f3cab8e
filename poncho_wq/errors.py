"""The one exception type of poncho_wq.

Every failure a user can act on is raised as :class:`PonchoError` with a one-line message that says what was
found and what to do. The command-line tools print ``<prog>: <message>`` and exit with :attr:`exit_code`;
tracebacks are shown only when ``PONCHO_DEBUG`` is set.
"""


class PonchoError(Exception):
    """A failure with a message meant for the user and the exit code the CLI should use.

    Exit codes follow the upstream man pages: 1 bad usage or bad input, 2 a named input file is missing,
    3 a build (or extraction) failed, 4 activation/relocation failed.
    """

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code

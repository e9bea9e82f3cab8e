"""The exceptions of poncho_wq: one base, one subclass per kind of failure.

Every failure a user can act on is raised as a :class:`PonchoError` with a one-line message that says what was
found and what to do. The command-line tools print ``<prog>: error: <message>`` and exit with
:attr:`PonchoError.exit_code`; tracebacks are shown only when ``PONCHO_DEBUG`` is set.

Library users catch by kind (as with packaging's ``InvalidRequirement`` / ``InvalidVersion``): a bad spec
(:class:`SpecError`) apart from a missing input (:class:`InputMissing`), a failed build (:class:`BuildError`) or a
failed activation (:class:`ActivationError`), without comparing exit codes. The exit codes follow the upstream
man pages and are the same in the three CLIs and the run shim.
"""


class Interrupted(KeyboardInterrupt):
    """The user stopped the work: Ctrl-C (SIGINT), SIGTERM or SIGHUP, in this process or in a tool it ran.

    A ``KeyboardInterrupt`` (never a :class:`PonchoError`: ``except PonchoError`` must not swallow a Ctrl-C). The CLIs
    exit with 128 + :attr:`signum` (130 for Ctrl-C)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class PonchoError(Exception):
    """A failure with a message meant for the user and the exit code the CLI should use.

    Exit codes: 1 bad usage or bad input, 2 a named input file is missing, 3 a build (or extraction) failed,
    4 activation/relocation failed. Subclasses fix the code for their kind; *exit_code* overrides it.
    """

    default_exit_code = 1

    def __init__(self, message, exit_code=None):
        super().__init__(message)
        self.exit_code = self.default_exit_code if exit_code is None else exit_code


class SpecError(PonchoError):
    """Bad input: a malformed spec, argument or option (exit code 1). The message names the field and value."""

    default_exit_code = 1


class InputMissing(PonchoError):
    """A named input file or directory does not exist or cannot be read (exit code 2)."""

    default_exit_code = 2


class BuildError(PonchoError):
    """Building, packing, downloading or writing an environment failed (exit code 3)."""

    default_exit_code = 3


class ActivationError(PonchoError):
    """Relocating or activating an environment failed (exit code 4)."""

    default_exit_code = 4

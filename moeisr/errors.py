"""The one exception type for problems the user can fix (bad file, bad value, missing data).

The CLI prints it as a single line (`moeisr CMD: error: ...`) and exits with status 2, without a traceback
unless `--debug` is given. So are OSErrors the user fixes outside the program (a full disk, a folder that
is not writable); everything else is a bug and keeps its traceback. Raise it with a message that names
the file or value and says what to do.
"""


class UserError(Exception):
    """A problem with the user's input, files or environment, reported in one line."""

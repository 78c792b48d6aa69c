"""Collecting bad input files, then either raising one ``DataError`` for all of them or skipping them."""

from mtunet.errors import DataError

# How many names an error message lists before it only counts the rest.
NAMES_SHOWN = 3


def name_some(names, shown: int = NAMES_SHOWN) -> str:
    """``"a, b, c and 4 more"``: the first ``shown`` names of ``names`` and a count of the others."""
    names = [str(name) for name in names]
    text = ", ".join(names[:shown])
    if len(names) > shown:
        text += f" and {len(names) - shown} more"
    return text


class Problems:
    """Bad files found while reading a dataset, grouped by what is wrong with them.

    ``where`` (a folder, a dataset name) is named in the error message. Each kind of problem has an ``expected``
    sentence (what a good file looks like), so that the error names the files and says how to fix them.
    ``skip=True`` makes :meth:`resolve` return the bad files instead of raising.
    """

    def __init__(self, where: str, *, skip: bool):
        self.where = where
        self.skip = skip
        self._found: dict[tuple[str, str], list[str]] = {}

    def add(self, file, problem: str, expected: str) -> None:
        """Records that ``file`` has ``problem`` (e.g. "cannot be read"); ``expected`` says what was wanted."""
        self._found.setdefault((problem, expected), []).append(str(file))

    def __bool__(self):
        return bool(self._found)

    def resolve(self) -> list[tuple[str, str]]:
        """Returns ``[(file, problem), ...]`` when skipping, else raises ``DataError`` if any problem was found.

        The error is one line: the first kind of problem with the first few files and a count, then a count of
        the other kinds.
        """
        if self.skip or not self._found:
            return [(file, problem) for (problem, _), files in self._found.items() for file in files]
        (problem, expected), files = next(iter(self._found.items()))
        message = f"{len(files)} file(s) in {self.where} {problem}: {name_some(files)}; expected {expected}"
        others = sum(len(other) for other in self._found.values()) - len(files)
        if others:
            message += f" ({others} other bad file(s) too)"
        raise DataError(message + ". Pass skip_bad_files=True (--skip-bad-files) to leave bad files out")

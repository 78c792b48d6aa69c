"""Collecting bad input files, then either raising one ``DataError`` for all of them or skipping them."""

from mtunet.errors import DataError
from mtunet.options import spell

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
        """Returns ``[(file, problem), ...]`` when skipping, else raises ``BadFilesError`` if any problem was found.

        The error is one line naming every kind of problem, with its count and first few files.
        """
        if self.skip or not self._found:
            return [(file, problem) for (problem, _), files in self._found.items() for file in files]
        raise BadFilesError(self.where, [(file, problem, expected) for (problem, expected), files in self._found.items()
                                         for file in files])


class BadFilesError(DataError):
    """Files of a dataset that cannot be used, every one of them: ``problems`` is ``[(file, problem, expected)]``
    and ``kinds()`` groups them."""

    def __init__(self, where: str, problems: list[tuple[str, str, str]]):
        self.where, self.problems = where, problems
        kinds = "; ".join(f"{len(files)} {problem} ({name_some(files)}; expected {expected})"
                          for (problem, expected), files in self.kinds().items())
        super().__init__(f"{len(problems)} bad file(s) in {where}: {kinds}. Pass {spell('skip_bad_files', True)} "
                         "to leave them out")

    def kinds(self) -> dict[tuple[str, str], list[str]]:
        """``{(problem, expected): [file, ...]}``, in the order the problems were found."""
        kinds = {}
        for file, problem, expected in self.problems:
            kinds.setdefault((problem, expected), []).append(file)
        return kinds

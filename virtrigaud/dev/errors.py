"""The one error type the dev stack raises: it names the part, what went wrong and the fix."""

from __future__ import annotations


class StackError(Exception):
    def __init__(self, part: str, problem: str, fix: str) -> None:
        self.part = part
        self.problem = problem
        self.fix = fix
        super().__init__(f"{part}: {problem} (fix: {fix})")

"""The frame of every starter file (what the exercise is, how to check it, which exercise it
is) and ``exercise``, which puts an exercise together from its starter, checks and mistakes."""

from __future__ import annotations

import ast
import textwrap

from minidiff.exercises import reference
from minidiff.exercises.harness import Check, Exercise, Mistake

__all__ = ["NOT_YET", "make_starter", "exercise"]

NOT_YET = 'raise NotImplementedError("not implemented yet")'


def make_starter(ex_id: str, file_name: str, title: str, intro: str, imports: str, body: str) -> str:
    """The text of a starter file: a docstring with the idea and the commands, the imports, the
    EXERCISE line that ``minidiff check`` reads, and the body (signatures, docstrings, TODOs)."""
    intro = textwrap.dedent(intro).strip()
    return (
        f'"""{ex_id} {title}\n\n{intro}\n\n'
        f"Fill in every TODO, then run the checks (offline, a few seconds):\n\n"
        f"    minidiff check {file_name}\n\n"
        f"`minidiff check {ex_id} --reference` runs the same checks on minidiff's own version.\n"
        f'"""\n\n'
        f"{textwrap.dedent(imports).strip()}\n\n"
        f'EXERCISE = "{ex_id}"  # which exercise this file is: `minidiff check` reads it\n\n\n'
        f"{textwrap.dedent(body).strip()}\n"
    )


def exercise(ex_id: str, title: str, lesson: str, file_name: str, heading: str, intro: str, imports: str, body: str,
             checks: tuple[Check, ...], mistakes: tuple[Mistake, ...] = ()) -> Exercise:
    """The exercise ex_id: its starter file (``make_starter`` with heading, intro, imports and
    body), its checks and known mistakes. What the learner writes is what the body defines (its
    functions and classes, in order); minidiff's version of each is the function or class of
    that name in ``minidiff.exercises.reference``."""
    tree = ast.parse(textwrap.dedent(body))
    names = tuple(node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef)))
    return Exercise(id=ex_id, title=title, lesson=lesson, file_name=file_name, names=names,
                    starter=make_starter(ex_id, file_name, heading, intro, imports, body), checks=checks,
                    mistakes=mistakes, reference={name: getattr(reference, name) for name in names})

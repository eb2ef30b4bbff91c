"""Tasks as plug-ins: what each kind of problem adds to the one run.

Importing this package registers the built-in tasks (``classification``, ``lm``); a recipe's
``task:`` picks one. A new task is one module that subclasses :class:`Task` and registers
itself with :func:`register_task`.
"""

from distil.tasks import classification, lm  # noqa: F401  (registration)
from distil.tasks.base import TASKS, Task, TeacherSet, check_method_fits, register_task, task_for

__all__ = ["TASKS", "Task", "TeacherSet", "check_method_fits", "register_task", "task_for"]

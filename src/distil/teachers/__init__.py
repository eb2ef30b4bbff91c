"""Teachers: a frozen local module, or outputs precomputed once and looked up by index."""

from distil.teachers.base import DTYPES, Teacher
from distil.teachers.module import ModuleTeacher
from distil.teachers.precomputed import PrecomputedTeacher

__all__ = ["DTYPES", "Teacher", "ModuleTeacher", "PrecomputedTeacher"]

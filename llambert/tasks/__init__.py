"""Tasks are data: a validated YAML file with labels, prompt templates and answer words."""

from llambert.tasks.spec import Example, Label, Task, available_tasks, load_task

__all__ = ["Example", "Label", "Task", "available_tasks", "load_task"]

"""Errors a user can fix. The CLI prints them as one clean message, without a traceback."""


class UserError(Exception):
    """Bad input or configuration: the message names the file or key and the problem."""


def format_problems(title: str, problems: list[str]) -> str:
    """One message listing every problem found, so the user fixes them all at once."""
    lines = [f"{title} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"]
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)

"""Which models depend on which: an ensemble on its members (Triton's DependencyGraph, reduced to
what ortserve needs).

Pure bookkeeping, no I/O: the manager records each ensemble's members when it reads the
ensemble's config, asks for cycles before it loads anything, and for the dependents of a model
it unloads or reloads.
"""

from __future__ import annotations


class DependencyGraph:
    def __init__(self) -> None:
        self._members: dict[str, frozenset[str]] = {}

    def set_members(self, model: str, members: set[str] | frozenset[str]) -> None:
        """``model`` depends on ``members`` (an empty set: it depends on nothing)."""
        if members:
            self._members[model] = frozenset(members)
        else:
            self._members.pop(model, None)

    def forget(self, model: str) -> None:
        self._members.pop(model, None)

    def members(self, model: str) -> frozenset[str]:
        return self._members.get(model, frozenset())

    def dependents(self, model: str) -> list[str]:
        """The models that use ``model`` directly, by name."""
        return sorted(name for name, members in self._members.items() if model in members)

    def all_dependents(self, model: str) -> list[str]:
        """Every model that uses ``model``, directly or through others, nearest first."""
        found: list[str] = []
        frontier = self.dependents(model)
        while frontier:
            name = frontier.pop(0)
            if name in found or name == model:
                continue
            found.append(name)
            frontier += self.dependents(name)
        return found

    def cycle_through(self, model: str) -> list[str] | None:
        """A dependency path that leads from ``model`` back to it ([model, ..., model]), if any."""
        path: list[str] = [model]

        def walk(current: str, seen: set[str]) -> bool:
            for member in sorted(self.members(current)):
                path.append(member)
                if member == model:
                    return True
                if member not in seen:
                    seen.add(member)
                    if walk(member, seen):
                        return True
                path.pop()
            return False

        return path if walk(model, {model}) else None


def circular_dependency_message(cycle: list[str]) -> str:
    """Triton's words for a cycle: the start, the model that leads back to it, the start."""
    return f"circular dependency between ensembles: {cycle[0]} -> ... -> {cycle[-2]} -> {cycle[0]}"

"""Cycles in a directed graph, one per strongly connected component (Tarjan), each
found breadth-first through the component's first vertex: only the graph search, kept
apart from the cross-field checks, which build the graph of their nodes' moments
(launched, scripts started, done) and report each cycle as a deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping

from provisor.core.yamlpos import Path


def _cycles(
    edges: Mapping[tuple[str, str], list[tuple[tuple[str, str], Path]]],
) -> list[list[tuple[tuple[str, str], Path]]]:
    """One cycle per strongly connected component (Tarjan), as (moment, edge-origin) pairs."""
    index: dict[tuple[str, str], int] = {}
    low: dict[tuple[str, str], int] = {}
    stack: list[tuple[str, str]] = []
    on_stack: set[tuple[str, str]] = set()
    components: list[set[tuple[str, str]]] = []

    def visit(start: tuple[str, str]) -> None:
        work = [(start, iter(edges.get(start, [])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            vertex, successors = work[-1]
            advanced = False
            for successor, _ in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(edges.get(successor, []))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[vertex] = min(low[vertex], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[vertex])
            if low[vertex] == index[vertex]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == vertex:
                        break
                if len(component) > 1:
                    components.append(component)

    for vertex in list(edges):
        if vertex not in index:
            visit(vertex)
    return [_cycle_in(component, edges) for component in components]


def _cycle_in(
    component: set[tuple[str, str]],
    edges: Mapping[tuple[str, str], list[tuple[tuple[str, str], Path]]],
) -> list[tuple[tuple[str, str], Path]]:
    """A cycle through the component's first vertex: breadth-first back to it."""
    start = min(component)
    came: dict[tuple[str, str], tuple[tuple[str, str], Path]] = {}
    queue = [start]
    while queue:
        vertex = queue.pop(0)
        for successor, where in edges.get(vertex, []):
            if successor not in component or successor in came:
                continue
            came[successor] = (vertex, where)
            if successor == start:
                queue = []
                break
            queue.append(successor)
    path: list[tuple[tuple[str, str], Path]] = []
    vertex = start
    while True:
        previous, where = came[vertex]
        path.append((previous, where))
        vertex = previous
        if vertex == start:
            break
    path.reverse()
    return path

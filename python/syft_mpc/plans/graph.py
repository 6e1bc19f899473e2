"""A plan's graph: traced with ``make_fx`` to aten ops, checked against the allowlist, run by an interpreter.

The graph is data (:class:`~syft_mpc.remote.messages.PlanDef`): a value table (inputs, then
state tensors, then one value per node) and nodes ``(op, args, kwargs)`` whose arguments name
earlier values with :class:`~syft_mpc.remote.messages.Var`. The same interpreter runs a plan
on the driver (``plan(x)`` on local tensors) and on a worker; a worker checks every node
against :data:`syft_mpc.remote.allowlist.ATEN_OPS` before it keeps the plan. The format is
described in ``docs/PLANS.md``.

Why ``make_fx``: it records what torch's dispatcher actually runs, *including the backward
pass* of ``loss.backward()`` or ``torch.autograd.grad`` inside the traced function, as plain
aten ops, so a training step (forward, loss, gradients, SGD update) is one graph with no
autograd left in it. ``torch.fx.symbolic_trace`` stops at autograd; ``torch.export`` also
traces to aten but is built for forward graphs with guards and dynamic-shape constraints that a
small, explicit, browser-runnable format does not need.

    >>> import torch
    >>> from syft_mpc.plans import graph
    >>> g = graph.trace(lambda x: (x + x).abs(), [torch.tensor([1.0, -2.0])], n_inputs=1, n_state=0)
    >>> [op for op, _, _ in g.nodes]
    ['aten.add.Tensor', 'aten.abs.default']
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from syft_mpc.errors import SerializationError, UnsupportedOperationError
from syft_mpc.remote import allowlist
from syft_mpc.remote.messages import PlanDef, Var

__all__ = ["GETITEM", "Traced", "check_ops", "code", "flat_outputs", "rebuild", "run", "trace"]

GETITEM = "prim.getitem"
"""The one non-aten node: element ``i`` of a node that returns several tensors."""

_ALIAS = torch.ops.aten.alias.default
_PLAIN = (type(None), bool, int, float, str, torch.dtype, torch.device, torch.memory_format)


@dataclass
class Traced:
    """What tracing produces: constants found in the graph (appended to the state), nodes and outputs."""

    constants: list[torch.Tensor]
    nodes: list[tuple[str, tuple[Any, ...], dict[str, Any]]]
    outputs: Any


def trace(fn: Callable[..., Any], examples: Sequence[torch.Tensor], n_inputs: int, n_state: int) -> Traced:
    """Traces ``fn(*examples)`` (``n_inputs`` inputs followed by ``n_state`` state tensors) to aten ops.

    Raises :class:`~syft_mpc.errors.UnsupportedOperationError` naming the first op that is not
    in the plan allowlist, and ``TypeError`` for outputs that are not tensors.
    """
    gm = make_fx(fn, tracing_mode="real")(*examples)
    gm.graph.eliminate_dead_code()
    env: dict[Any, Any] = {}
    constants: list[torch.Tensor] = []
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != n_inputs + n_state:
        raise RuntimeError(f"traced {len(placeholders)} inputs, expected {n_inputs + n_state}")
    for i, n in enumerate(placeholders):
        env[n] = Var(i)
    base = n_inputs + n_state
    for n in gm.graph.nodes:  # tensors the function closed over become state
        if n.op == "get_attr":
            t = getattr(gm, n.target)
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"a plan can only capture tensors, not {type(t).__name__}")
            env[n] = Var(base + len(constants))
            constants.append(t.detach().clone())
    first = base + len(constants)
    nodes: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    outputs: Any = None
    for n in gm.graph.nodes:
        if n.op == "call_function":
            if n.target is _ALIAS:  # a view of the same tensor: the interpreter needs no node for it
                env[n] = _arg(n.args[0], env)
                continue
            name: "str | None" = GETITEM if n.target is operator.getitem else allowlist.aten_name_of(n.target)
            if name is None:
                raise UnsupportedOperationError(
                    f"the plan uses {n.target}, which workers do not run in plans (see ATEN_OPS in "
                    "syft_mpc/remote/allowlist.py and docs/PLANS.md); express it with other torch ops"
                )
            kwargs = {k: _arg(v, env) for k, v in n.kwargs.items() if not (k == "layout" and v == torch.strided)}
            nodes.append((name, tuple(_arg(a, env) for a in n.args), kwargs))
            env[n] = Var(first + len(nodes) - 1)
        elif n.op == "output":
            outputs = _arg(n.args[0], env)
        elif n.op not in ("placeholder", "get_attr"):
            raise TypeError(f"unexpected graph node {n.op} ({n.target})")
    leaves = flat_outputs(outputs)
    if not leaves or any(type(v) is not Var for v in leaves):
        raise TypeError("a plan returns a tensor, or a tuple or list of tensors (numbers are not traced: return torch.tensor(n))")
    return Traced(constants, nodes, outputs)


def _arg(a: Any, env: dict[Any, Any]) -> Any:
    if isinstance(a, torch.fx.Node):
        return env[a]
    if isinstance(a, tuple):
        return tuple(_arg(x, env) for x in a)
    if isinstance(a, list):  # also fx's immutable_list
        return [_arg(x, env) for x in a]
    if isinstance(a, _PLAIN):
        return a
    raise TypeError(f"a plan cannot carry a {type(a).__name__} argument ({a!r})")


def check_ops(plan: PlanDef, where: str) -> None:
    """Refuses a plan that names an op outside the allowlist (before anything runs)."""
    for k, (op, _, _) in enumerate(plan.nodes):
        if op != GETITEM and op not in allowlist.ATEN_OPS:
            raise UnsupportedOperationError(
                f"plan {plan.name!r} was refused by {where}: node {k} names operation {op!r}, which is not "
                "in the plan allowlist (syft_mpc.remote.allowlist.ATEN_OPS)"
            )


def _resolve(v: Any, values: list[Any]) -> Any:
    tv = type(v)
    if tv is Var:
        return values[v.idx]
    if tv is list or tv is tuple:
        return tv(_resolve(x, values) for x in v)
    if tv is dict:
        return {k: _resolve(x, values) for k, x in v.items()}
    return v


def run(plan: PlanDef, inputs: Sequence[Any]) -> Any:
    """Runs ``plan`` on its flat ``inputs``; returns its outputs (a tensor, or lists/tuples of them).

    Every op is looked up in the allowlist (a plan made by hand is checked here too)."""
    if len(inputs) != plan.n_inputs:
        raise TypeError(f"plan {plan.name!r} takes {plan.n_inputs} tensors, got {len(inputs)}")
    for i, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"input {i} of plan {plan.name!r} must be a tensor, got {type(t).__name__}")
    values: list[Any] = [*inputs, *plan.state]
    with torch.no_grad():
        for k, (op, args, kwargs) in enumerate(plan.nodes):
            a = _resolve(args, values)
            kw = _resolve(kwargs, values)
            if op == GETITEM:
                if len(a) != 2 or type(a[1]) is not int or not isinstance(a[0], (tuple, list)):
                    raise SerializationError(f"plan node {k}: prim.getitem takes (a node with several results, int)")
                values.append(a[0][a[1]])
                continue
            fn = allowlist.ATEN_OPS.get(op)
            if fn is None:
                raise UnsupportedOperationError(f"plan node {k} names operation {op!r}, which is not in the plan allowlist")
            try:
                values.append(fn(*a, **kw))
            except (RuntimeError, TypeError, ValueError, IndexError) as e:
                msg = f"plan {plan.name!r}, node {k} ({op}): {e}"
                try:
                    err = type(e)(msg)
                except Exception:  # an exception class with another constructor
                    err = RuntimeError(msg)
                raise err from None
    out = _resolve(plan.outputs, values)
    for t in _tensors(out):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"plan {plan.name!r} returns a {type(t).__name__}; plans return tensors")
    return out


def _tensors(v: Any) -> list[Any]:
    if type(v) in (list, tuple):
        return [x for item in v for x in _tensors(item)]
    return [v]


def flat_outputs(v: Any) -> list[Any]:
    """The leaves of an output structure, in order."""
    return _tensors(v)


def rebuild(tree: Any, leaves: Sequence[Any]) -> Any:
    """``tree`` (lists/tuples whose leaves are Vars or constants) with ``Var(i)`` replaced by ``leaves[i]``."""
    if type(tree) is Var:
        return leaves[tree.idx]
    if type(tree) in (list, tuple):
        return type(tree)(rebuild(x, leaves) for x in tree)
    return tree


def code(plan: PlanDef) -> str:
    """The graph as readable pseudo-code (PySyft's ``plan.code``): one line per node.

        >>> import torch
        >>> from syft_mpc.remote.messages import PlanDef, Var
        >>> print(code(PlanDef(1, "double_abs", (Var(0),), 1, [], [("aten.add.Tensor", (Var(0), Var(0)), {}),
        ...                                                       ("aten.abs.default", (Var(1),), {})], Var(2))))
        def double_abs(v0):
            v1 = aten.add.Tensor(v0, v0)
            v2 = aten.abs.default(v1)
            return v2
    """
    n_state = len(plan.state)

    def show(v: Any) -> str:
        if type(v) is Var:
            return f"v{v.idx}"
        if type(v) is tuple:
            return "(" + ", ".join(show(x) for x in v) + ("," if len(v) == 1 else "") + ")"
        if type(v) is list:
            return "[" + ", ".join(show(x) for x in v) + "]"
        return repr(v)

    params = [f"v{i}" for i in range(plan.n_inputs)]
    lines = [f"def {plan.name}({', '.join(params)}):"]
    for i in range(n_state):
        t = plan.state[i]
        lines.append(f"    v{plan.n_inputs + i} = state[{i}]  # {tuple(t.shape)} {t.dtype}")
    first = plan.n_inputs + n_state
    for k, (op, args, kwargs) in enumerate(plan.nodes):
        parts = [show(a) for a in args] + [f"{key}={show(v)}" for key, v in kwargs.items()]
        lines.append(f"    v{first + k} = {op}({', '.join(parts)})")
    lines.append(f"    return {show(plan.outputs)}")
    return "\n".join(lines)

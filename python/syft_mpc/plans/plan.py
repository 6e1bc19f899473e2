"""Plans: a function or an ``nn.Module`` traced once into a graph of allowlisted aten ops,
sent to a worker once, and run there many times by id.

    >>> import torch, syft_mpc as sy
    >>> hook = sy.TorchHook(torch)
    >>> bob = sy.VirtualWorker(hook, id="bob")
    >>> @sy.func2plan(args_shape=[(-1, 1)])
    ... def double_abs(x):
    ...     return torch.abs(x + x)
    >>> double_abs.is_built
    True
    >>> ptr_plan = double_abs.send(bob)
    >>> ptr_plan(torch.tensor([[-1.0], [2.0]]).send(bob)).get()
    tensor([[2.],
            [4.]])

A plan keeps the control flow of the call that built it (``if``/``for`` are traced through,
as in PySyft). Shapes the function reads in Python (``x.shape[0]``) become constants of the
graph; ``x.view(-1, 64)`` keeps the batch dimension free.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn

from syft_mpc.errors import LocationError, PlanError
from syft_mpc.plans import graph
from syft_mpc.remote.messages import Fetch, PlanDef, PlanRun, PlanStore, Var, new_id
from syft_mpc.remote.pointers import PointerTensor
from syft_mpc.remote.serde import ObjRef
from syft_mpc.remote.workers import BaseWorker, local_worker

__all__ = ["Plan", "PointerPlan", "State", "flatten_call", "func2plan", "signature", "template", "with_leaves"]

_CONSTANTS = (type(None), bool, int, float, str)


class State:
    """The tensors a plan carries with it (PySyft's ``state``): ``state.read()`` returns them."""

    def __init__(self, tensors: Iterable[torch.Tensor], names: "Sequence[str] | None" = None) -> None:
        self.tensors = list(tensors)
        self.names = list(names) if names is not None else [f"state_{i}" for i in range(len(self.tensors))]

    def read(self) -> tuple[torch.Tensor, ...]:
        """The state tensors, in order (inside a plan: the values the plan runs with)."""
        return tuple(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __repr__(self) -> str:
        return "State: " + ", ".join(self.names)


def template(args: Any, leaves: list[torch.Tensor]) -> Any:
    """The argument structure of a call: tensors become ``Var(i)`` (appended to ``leaves``),
    lists and tuples keep their shape, plain constants stay as they are."""
    if isinstance(args, (torch.Tensor, PointerTensor)):
        leaves.append(args)  # type: ignore[arg-type]
        return Var(len(leaves) - 1)
    if type(args) in (list, tuple):
        return type(args)(template(a, leaves) for a in args)
    if isinstance(args, _CONSTANTS):
        return args
    raise TypeError(f"a plan takes tensors, lists and tuples of them, and plain numbers; not {type(args).__name__}")


def flatten_call(in_tree: Any, args: Any, name: str) -> list[Any]:
    """The flat inputs of a call ``args`` to a plan built with structure ``in_tree``."""
    leaves: list[Any] = []
    try:
        call_tree = template(args, leaves)
    except TypeError as e:
        raise PlanError(f"plan {name!r}: {e}") from None
    if not _same_structure(in_tree, call_tree):
        raise PlanError(
            f"plan {name!r} was built for arguments shaped like {_show(in_tree)} and is called with "
            f"{_show(call_tree)}; numbers given at build time are constants of the plan (pass a tensor "
            "to vary one), so build it again for another structure"
        )
    return leaves


def _same_structure(a: Any, b: Any) -> bool:
    if type(a) is Var or type(b) is Var:
        return type(a) is type(b)
    if type(a) in (list, tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same_structure(x, y) for x, y in zip(a, b))
    return bool(type(a) is type(b) and a == b)


def _show(tree: Any) -> str:
    if type(tree) is Var:
        return "tensor"
    if type(tree) is tuple:
        return "(" + ", ".join(_show(x) for x in tree) + ("," if len(tree) == 1 else "") + ")"
    if type(tree) is list:
        return "[" + ", ".join(_show(x) for x in tree) + "]"
    return repr(tree)


def signature(flat: Sequence[Any]) -> tuple[tuple[Any, ...], ...]:
    """The input shapes and dtypes of a call (tensors or pointers): one graph is kept per signature."""
    return tuple((*t.shape, t.dtype) for t in flat)


def with_leaves(tree: Any, leaves: Iterable[Any]) -> Any:
    """``tree`` (an output structure of Vars) with its leaves replaced, in order, by ``leaves``."""
    it = iter(leaves)

    def go(t: Any) -> Any:
        if type(t) in (list, tuple):
            return type(t)(go(x) for x in t)
        return next(it)

    return go(tree)


class Plan(nn.Module):
    """A sequence of torch operations, traced once, that workers run by id.

    Made by :func:`func2plan` from a function, or by subclassing (``class Net(sy.Plan)`` with
    layers set in ``__init__`` and a ``forward``; their parameters and buffers are the plan's
    state). ``build(*args)`` traces it on example arguments; ``send(worker)`` stores it on a
    worker and returns a :class:`PointerPlan`; calling the plan (or the pointer) on pointers
    runs it there and returns pointers. Calling it on local tensors runs the graph here.
    """

    def __init__(
        self,
        name: "str | None" = None,
        forward_func: "Callable[..., Any] | None" = None,
        state: "Sequence[torch.Tensor] | None" = None,
        id: "int | None" = None,
    ) -> None:
        super().__init__()
        self.name = name or type(self).__name__
        self.forward_func = forward_func
        self.id = new_id() if id is None else id
        self.owner: BaseWorker = local_worker
        self._func_state = [t for t in (state or ())]
        self._definition: "PlanDef | None" = None
        self._variants: dict[tuple[tuple[Any, ...], ...], PlanDef] = {}
        self._traceable = True
        self._input_grads: list[bool] = []
        self._tracing = False
        self.pointers: dict[str, PointerPlan] = {}
        if forward_func is not None:
            self.__doc__ = forward_func.__doc__

    # ------------------------------------------------------------------ state and building

    @property
    def state(self) -> State:
        """The plan's state: the ``state`` tensors of a function plan, or a module's parameters and buffers."""
        if self.forward_func is not None:
            return State(self._func_state)
        named = [*self.named_parameters(), *self.named_buffers()]
        return State([t for _, t in named], [n for n, _ in named])

    @property
    def is_built(self) -> bool:
        """Whether the plan has been traced (``build``, ``args_shape``, or a first call)."""
        return self._definition is not None

    @property
    def definition(self) -> PlanDef:
        """The graph as it travels (state at its current values); raises :class:`PlanError` if not built."""
        d = self._definition
        if d is None:
            raise PlanError(f"plan {self.name!r} is not built yet: call plan.build(*example_args) first")
        return self._with_state(d)

    def _with_state(self, d: PlanDef) -> PlanDef:
        n_own = len(self.state)
        current = [t.detach() for t in self.state.read()]
        return PlanDef(d.plan_id, d.name, d.in_tree, d.n_inputs, current + d.state[n_own:], d.nodes, d.outputs)

    @property
    def code(self) -> str:
        """The built graph as readable pseudo-code, one line per aten op (PySyft's ``plan.code``)."""
        return graph.code(self.definition)

    def build(self, *args: Any) -> "Plan":
        """Traces the plan on example arguments (tensors, lists and tuples of tensors, numbers)."""
        leaves: list[torch.Tensor] = []
        template(args, leaves)
        if any(isinstance(t, PointerTensor) for t in leaves):
            raise PlanError("build a plan on local example tensors (of the shape and dtype it will get), not on pointers")
        d = self._trace(args)
        self._input_grads = [bool(t.requires_grad) for t in leaves]
        self._definition = d
        self._variants = {signature(leaves): d}
        self.pointers.clear()  # a rebuilt plan is a new plan for the workers
        return self

    def definition_for(self, flat: Sequence[Any]) -> PlanDef:
        """The graph for a call whose flat inputs are ``flat`` (tensors or pointers): the plan is
        traced again, once, for each new combination of input shapes and dtypes (torch needs concrete sizes
        in places, e.g. the batch size in a training step's backward), like a compiler keeping one
        graph per input signature. A plan that came from a worker has no code: it keeps its graph."""
        d = self.definition
        sig = signature(flat)
        variant = self._variants.get(sig)
        if variant is None:
            if self._traceable:
                # the inputs that required grad when the plan was built (a training step's parameters) do again
                examples = [
                    _retrace_example(t, rg) for t, rg in zip(flat, self._input_grads)
                ]
                variant = self._trace(graph.rebuild(d.in_tree, examples))
                if not _same_structure(variant.outputs, d.outputs):
                    raise PlanError(f"plan {self.name!r} returns another structure for inputs {sig}")
            else:
                variant = d
            self._variants[sig] = variant
        return self._with_state(variant)

    def _trace(self, args: tuple[Any, ...]) -> PlanDef:
        leaves: list[torch.Tensor] = []
        in_tree = template(args, leaves)
        own = list(self.state.read())
        n_in = len(leaves)

        def traced(*flat: torch.Tensor) -> Any:
            call_args = graph.rebuild(in_tree, flat[:n_in])
            return self._trace_call(call_args, flat[n_in:])

        examples = [_example(t) for t in [*leaves, *own]]
        self._tracing = True
        try:
            g = graph.trace(traced, examples, n_inputs=n_in, n_state=len(own))
        finally:
            self._tracing = False
        return PlanDef(self.id, self.name, in_tree, n_in, [t.detach() for t in own] + g.constants, g.nodes, g.outputs)

    def _trace_call(self, args: tuple[Any, ...], state: Sequence[torch.Tensor]) -> Any:
        if self.forward_func is not None:
            if "state" in inspect.signature(self.forward_func).parameters:
                return self.forward_func(*args, state=State(state))
            return self.forward_func(*args)
        names = [n for n, _ in self.named_parameters()] + [n for n, _ in self.named_buffers()]
        return torch.func.functional_call(self, dict(zip(names, state)), args)

    # ------------------------------------------------------------------ running

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._tracing:  # inside build: the module's own forward
            return super().__call__(*args, **kwargs)
        if kwargs:
            raise PlanError("plans take positional arguments only")
        leaves: list[Any] = []
        template(args, leaves)
        ptrs = [t for t in leaves if isinstance(t, PointerTensor)]
        if ptrs:
            location = ptrs[0].location
            if any(p.location != location for p in ptrs):
                raise LocationError(
                    f"plan {self.name!r} got pointers to {sorted({p.location.id for p in ptrs})}; a plan runs on one "
                    "worker: .move() the data there first"
                )
            if not self.is_built:
                raise PlanError(f"plan {self.name!r} is not built yet: call plan.build(*example_args) on local tensors first")
            ptr_plan = self.pointers.get(location.id)
            if ptr_plan is None or ptr_plan.location is not location:
                ptr_plan = self.send_to(location)
            return ptr_plan(*args)
        if not self.is_built:
            self.build(*args)
        flat = flatten_call(self.definition.in_tree, args, self.name)
        return graph.run(self.definition_for(flat), flat)

    def forward(self, *args: Any) -> Any:  # a function plan's body; subclasses define their own
        if self.forward_func is None:
            raise NotImplementedError(f"{type(self).__name__} must define forward()")
        return self.forward_func(*args)

    # ------------------------------------------------------------------ workers

    def send(self, *workers: BaseWorker) -> "PointerPlan | tuple[PointerPlan, ...]":
        """Stores the built plan on each worker (one message each) and returns its pointer(s)."""
        if not self.is_built:
            raise PlanError("A plan needs to be built before being sent to a worker.")
        if not workers:
            raise TypeError("plan.send(worker, ...) needs at least one worker")
        out = [self.send_to(w) for w in workers]
        return out[0] if len(out) == 1 else tuple(out)

    def send_to(self, w: BaseWorker) -> "PointerPlan":
        """Stores the built plan on ``w`` and returns its pointer (``send`` for one worker, always a PointerPlan)."""
        d = self.definition
        pid = new_id()
        self.owner._send(w, PlanStore(pid, PlanDef(pid, d.name, d.in_tree, d.n_inputs, d.state, d.nodes, d.outputs)))
        ptr = PointerPlan(self.owner, w, pid, d.name, d.in_tree, d.outputs, n_outputs=len(graph.flat_outputs(d.outputs)))
        if self._traceable:  # a plan with code can trace other input shapes for this pointer
            ptr.plan = self
            ptr.ids[next(iter(self._variants))] = pid
        self.pointers[w.id] = ptr
        return ptr

    def get(self) -> "Plan":
        """Brings the plan back from the workers it was sent to (they forget it); a module plan's
        parameters and buffers take the values the worker has (its plan may update buffers)."""
        if not self.pointers:
            raise PlanError(f"plan {self.name!r} was not sent to any worker")
        for ptr in list(self.pointers.values()):
            back = ptr.fetch(remove=True)
            with torch.no_grad():
                for mine, theirs in zip(self.state.read(), back.state):
                    mine.copy_(theirs)
        self.pointers.clear()
        return self

    @classmethod
    def from_definition(cls, d: PlanDef) -> "Plan":
        """A function plan that runs the graph ``d`` (what ``pointer_plan.get()`` returns)."""
        plan = cls(name=d.name, forward_func=_unavailable(d.name), id=d.plan_id)
        plan._definition = d
        plan._traceable = False
        plan._func_state = []  # the graph's state travels in d.state as constants
        return plan

    def __repr__(self) -> str:
        where = "".join(f" location:{w}" for w in self.pointers)
        return f"<{type(self).__name__} {self.name} id:{self.id} owner:{self.owner.id}{where}{' built' if self.is_built else ''}>"

    __str__ = __repr__


def _unavailable(name: str) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        raise PlanError(f"plan {name!r} came from a worker as a graph: run it, it has no Python code to trace again")

    return forward


def _retrace_example(t: Any, requires_grad: bool) -> torch.Tensor:
    e = t.detach().clone() if isinstance(t, torch.Tensor) else torch.ones(t.shape, dtype=t.dtype)
    return e.requires_grad_(requires_grad and (e.dtype.is_floating_point or e.dtype.is_complex))


def _example(t: torch.Tensor) -> torch.Tensor:
    e = t.detach().clone()
    return e.requires_grad_(True) if t.requires_grad else e


class PointerPlan:
    """A plan stored on a worker (what ``plan.send(worker)`` returns). Calling it on pointers at
    that worker runs the plan there (one message) and returns pointers to its outputs;
    ``.get()`` brings the plan back and removes it from the worker."""

    def __init__(
        self, owner: BaseWorker, location: BaseWorker, id_at_location: int, name: str, in_tree: Any, outputs: Any,
        n_outputs: int,
    ) -> None:
        self.owner, self.location, self.id_at_location = owner, location, id_at_location
        self.name, self.in_tree, self.outputs, self.n_outputs = name, in_tree, outputs, n_outputs
        self.id = new_id()
        self._consumed = False
        self.plan: "Plan | None" = None  # the plan it was sent from, which can trace other input shapes
        self.ids: dict[tuple[tuple[Any, ...], ...], int] = {}  # input signature -> id of that graph on the worker

    def __call__(self, *args: Any) -> Any:
        if self._consumed:
            raise PlanError(f"plan {self.name!r} is no longer on worker {self.location.id} (it was retrieved with .get())")
        flat = flatten_call(self.in_tree, args, self.name)
        pid = self.id_at_location
        if self.plan is not None:
            sig = signature(flat)
            if sig not in self.ids:  # a new input signature: its graph is sent once, then reused
                d = self.plan.definition_for(flat)
                self.ids[sig] = new_id()
                self.owner._send(self.location, PlanStore(self.ids[sig], d))
            pid = self.ids[sig]
        wire: list[Any] = []
        for i, t in enumerate(flat):
            if isinstance(t, PointerTensor):
                t._check_alive()
                if t.location != self.location:
                    raise LocationError(
                        f"input {i} of plan {self.name!r} is on worker {t.location.id}, the plan on {self.location.id}: "
                        f".move({self.location.id}) it first"
                    )
                wire.append(ObjRef(t.id_at_location))
            else:
                wire.append(t.detach())  # a local tensor travels with the request
        rids = [new_id() for _ in range(self.n_outputs)]
        descs = self.owner._send(self.location, PlanRun(pid, tuple(wire), rids))
        ptrs = [self.owner._pointer_from_desc(d) for d in descs]
        return with_leaves(self.outputs, ptrs)

    def fetch(self, remove: bool) -> PlanDef:
        """The plan's graph as the worker holds it (``remove``: the worker forgets it)."""
        d = self.owner._send(self.location, Fetch(self.id_at_location, remove))
        if not isinstance(d, PlanDef):
            raise PlanError(f"object {self.id_at_location} on worker {self.location.id} is not a plan")
        if remove:
            self._consumed = True
            for other in set(self.ids.values()) - {self.id_at_location}:
                self.owner._queue_delete(self.location, other)
        return d

    def get(self) -> Plan:
        """Brings the plan back (the worker forgets it)."""
        return Plan.from_definition(self.fetch(remove=True))

    def __del__(self) -> None:
        try:
            if not self._consumed:
                for pid in {self.id_at_location, *self.ids.values()}:
                    self.owner._queue_delete(self.location, pid)
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"[PointerPlan | {self.owner.id}:{self.id} -> {self.location.id}:{self.id_at_location}]"


def func2plan(
    args_shape: "Sequence[Sequence[int]] | None" = None,
    state: "Sequence[torch.Tensor] | None" = None,
) -> Callable[[Callable[..., Any]], Plan]:
    """Decorator: turns a function into a :class:`Plan` (``@sy.func2plan()``).

    ``args_shape`` builds it at once on float tensors of ones of those shapes (``-1`` becomes 1);
    ``state`` is a tuple of tensors the function receives as ``state`` (``state.read()``).
    """

    def decorate(fn: Callable[..., Any]) -> Plan:
        plan = Plan(name=fn.__name__, forward_func=fn, state=state)
        if args_shape is not None:
            plan.build(*[torch.ones(tuple(1 if d == -1 else d for d in shape)) for shape in args_shape])
        return plan

    return decorate

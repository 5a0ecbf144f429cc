"""Frozen, slotted dataclasses built as fast as plain ones.

A frozen dataclass's generated ``__init__`` stores each field with
``object.__setattr__(self, name, value)``: a call through a slot wrapper that
costs about ten times a plain attribute store on the CPython the daemon runs
(built without profile-guided optimisation). The records the accept path
makes for every message (the job to queue, the judged message, the stored
job and its answer) have 2 to 19 fields each: that was a tenth of the daemon's
CPU per accepted message. :func:`quick_init` gives such a class an
``__init__`` with the same signature and the same result that stores the
fields plainly: for the time of ``__init__`` the instance is of a subclass
with the same layout whose attribute store is the ordinary one, then it is
given back its class. Every instance made is as frozen as before.

Where a record is made for every message (a batch's thousand), even that
call costs: ``type.__call__``, then ``__init__`` reading its arguments by
keyword. :func:`maker` gives the same record from a plain function taking
every field by position, in the order of the class (about a third of the
time of ``NewJob(kind=..., ...)``); the hot paths use it, the rest of the code
the class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Replace the ``__init__`` of ``cls`` (a frozen, slotted dataclass with
    no ``__post_init__``, no ``InitVar`` and no default factory) by one with
    the same parameters that builds the same instance faster. A subclass of
    ``cls`` is built by the dataclass's own ``__init__`` as before."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__: its __init__ stays the dataclass's")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]  # checked just above
    if any(not f.init or f.default_factory is not dataclasses.MISSING for f in fields):
        raise TypeError(f"{cls.__name__}: every field must be set by __init__, without a default factory")
    open_cls = type(f"_Open{cls.__name__}", (cls,), {"__slots__": (), "__setattr__": object.__setattr__,
                                                     "__delattr__": object.__delattr__})
    defaults: dict[str, Any] = {}
    positional: list[str] = []
    keyword: list[str] = []
    for f in fields:
        text = f.name
        if f.default is not dataclasses.MISSING:
            defaults[f"_default_{f.name}"] = f.default
            text += f"=_default_{f.name}"
        (keyword if f.kw_only else positional).append(text)
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    names = [f.name for f in fields]
    body = "\n".join(f"    self.{name} = {name}" for name in names)
    source = (f"def __init__({signature}):\n"
              "    if type(self) is not _cls:\n"
              f"        return _dataclass_init(self, {', '.join(f'{n}={n}' for n in names)})\n"
              "    _set_class(self, '__class__', _open)\n"
              f"{body}\n"
              "    self.__class__ = _cls\n")
    namespace: dict[str, Any] = {"_cls": cls, "_open": open_cls, "_set_class": object.__setattr__,
                                 "_new": object.__new__, "_dataclass_init": cls.__init__, **defaults}
    exec(source, namespace)  # noqa: S102 - generated from the class's own field names, as dataclasses does
    init = namespace["__init__"]
    # The maker: the same instance from every field given by position (no defaults, no keywords).
    make = (f"def make({', '.join(names)}):\n"
            "    self = _new(_open)\n"
            f"{body}\n"
            "    self.__class__ = _cls\n"
            "    return self\n")
    exec(make, namespace)  # noqa: S102 - as above
    type.__setattr__(cls, "_quick_make", staticmethod(namespace["make"]))
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)  # the same signature, annotations too
    type.__setattr__(cls, "__init__", init)
    return cls


def maker(cls: type[T]) -> Callable[..., T]:
    """A function making a record of ``cls`` (a class :func:`quick_init` was given) from
    every one of its fields by position, in the class's order: ``maker(Enqueued)(job, True)``
    is ``Enqueued(job, True)``."""
    make = cls.__dict__.get("_quick_make")
    if make is None:
        raise TypeError(f"{cls.__name__} was not given quick_init")
    return make.__func__

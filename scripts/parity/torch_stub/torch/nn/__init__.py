"""Placeholder ``torch.nn`` for the parity stub (see ``torch/__init__.py``)."""


class Module:
    pass


class Linear(Module):
    pass

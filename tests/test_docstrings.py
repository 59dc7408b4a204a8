"""Every public optimizer class of fusedopt has a docstring that names its paper (authors and year)
and mentions every constructor argument.

A docstring written as ``\"\"\"...\"\"\" + X`` in a class body is an expression, not a docstring
(``__doc__`` stays None): eight classes had that bug. The table below is the list of public
optimizer classes; a new public class must be added to it."""
from __future__ import annotations

import inspect
import re

import pytest
import torch

import fusedopt
from fusedopt.optim.base import STORAGE_OPTIONS, FusedOptimizer

# class name -> the paper as the docstring must name it (authors and year)
PAPERS = {
    "Adam": "Kingma & Ba 2015", "AdamW": "Loshchilov & Hutter 2019", "Adamax": "Kingma & Ba 2015",
    "RAdam": "Liu et al. 2020", "NAdam": "Dozat 2016", "SGD": "Sutskever et al. 2013",
    "RMSprop": "Tieleman & Hinton 2012", "Adagrad": "Duchi, Hazan & Singer 2011", "Adadelta": "Zeiler 2012",
    "AdaBelief": "Zhuang et al. 2020", "ACProp": "Zhuang et al. 2021", "DiffGrad": "Dubey et al. 2019",
    "Padam": "Chen et al. 2020", "SignSGD": "Crawshaw et al. 2022", "PNM": "Xie et al. 2021",
    "AdaPNM": "Xie et al. 2021", "Adan": "Xie et al. 2022", "Lion": "Chen et al. 2023",
    "LAMB": "You et al. 2020", "FusedLAMB": "You et al. 2020", "LARS": "You et al. 2017",
    "Adafactor": "Shazeer & Stern 2018", "AdafactorTorch": "Shazeer & Stern 2018",
    "AdEMAMix": "Pagliardini et al. 2024", "AdamWScheduleFree": "Defazio et al. 2024",
    "KOALA": "Davtyan et al. 2022", "VanillaKOALA": "Davtyan et al. 2022", "MomentumKOALA": "Davtyan et al. 2022",
    "Lookahead": "Zhang et al. 2019", "IterateAveraging": "Granziol et al. 2020",
    "Adam8bit": "Dettmers et al. 2022", "AdamW8bit": "Dettmers et al. 2022", "Lion8bit": "Dettmers et al. 2022",
    "SGD8bit": "Dettmers et al. 2022", "RMSprop8bit": "Dettmers et al. 2022", "Adagrad8bit": "Dettmers et al. 2022",
    "CPUOffloadOptimizer": "Ren et al. 2021",
}
# not an update rule: the base class documents the subclass contract, not a paper
NOT_A_RULE = {"FusedOptimizer"}
SKIP_ARGS = {"self", "params", "args", "kwargs", "optimizer"}


def _public_optimizer_classes():
    out = {}
    for name in sorted(set(fusedopt.__all__)):
        obj = getattr(fusedopt, name)
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and name not in NOT_A_RULE:
            out[name] = obj
    return out


CLASSES = _public_optimizer_classes()


def test_every_public_optimizer_class_is_listed():
    assert set(CLASSES) == set(PAPERS), (
        f"public optimizer classes without a paper entry: {sorted(set(CLASSES) - set(PAPERS))}; "
        f"entries for names that are not public classes: {sorted(set(PAPERS) - set(CLASSES))}")


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_docstring_names_paper_and_arguments(name):
    cls = CLASSES[name]
    doc = cls.__doc__
    assert doc, f"fusedopt.{name} has no docstring (__doc__ is {doc!r})"
    # normalise line breaks inside a citation ("Xie et\n    al. 2021")
    flat = " ".join(doc.split())
    assert PAPERS[name] in flat, f"fusedopt.{name}'s docstring does not name its paper ({PAPERS[name]!r})"
    sig = inspect.signature(cls.__init__).parameters
    args = [a for a, prm in sig.items() if a not in SKIP_ARGS and prm.kind is not prm.VAR_KEYWORD]
    if "options" in sig and sig["options"].kind is sig["options"].VAR_KEYWORD and issubclass(cls, FusedOptimizer):
        # **options: the storage options every fused class takes (optim/base.py), and capturable
        args += [k for k in STORAGE_OPTIONS if k not in args] + (["capturable"] if "capturable" not in args else [])
    missing = [a for a in args if not re.search(r"(?<![\w.])" + re.escape(a) + r"(?!\w)", doc)]
    assert not missing, f"fusedopt.{name}'s docstring does not mention its arguments {missing}"


def test_the_check_can_fail():
    """The same check flags a class whose body starts with a string expression (the old bug)."""
    class Broken(torch.optim.Optimizer):
        """text""" + ""  # noqa: an expression, not a docstring

        def __init__(self, params, lr=1.0):
            super().__init__(params, {"lr": lr})

    assert Broken.__doc__ is None

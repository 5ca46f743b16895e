"""_zoro.pyi and the extension module name the same things (so the stubs cannot drift)."""

import ast
import inspect
import pathlib

import zoro
from zoro import _zoro

STUB = pathlib.Path(zoro.__file__).with_name("_zoro.pyi")
STUB_ONLY = {"Array", "ParamLike"}  # type aliases of the stub itself


def stub_names():
    tree = ast.parse(STUB.read_text())
    top, members = set(), {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            top.add(node.name)
        elif isinstance(node, ast.Assign):
            top.update(t.id for t in node.targets if isinstance(t, ast.Name))
        if isinstance(node, ast.ClassDef):
            names = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign):
                    names.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    names.update(t.id for t in item.targets if isinstance(t, ast.Name))
            members[node.name] = names
    return top - STUB_ONLY, members


def public(names):
    return {n for n in names if not n.startswith("__") or n in ("__init__", "__int__", "__index__",
                                                              "__eq__", "__hash__")}


def test_module_names_match_the_stub():
    top, _ = stub_names()
    module = {n for n in dir(_zoro) if not n.startswith("__")}
    assert top == module, f"only in stub: {top - module}; only in module: {module - top}"


def test_class_members_match_the_stub():
    _, members = stub_names()
    for cls_name, stub_members in members.items():
        cls = getattr(_zoro, cls_name)
        if issubclass(cls, BaseException):
            declared = {"library", "code"} if cls_name == "BackendError" else set()
            assert stub_members == declared, cls_name
            continue
        if isinstance(getattr(cls, "__members__", None), dict):  # pybind11 enums
            actual = set(cls.__members__)
        else:
            actual = {n for n, _ in inspect.getmembers(cls)
                      if not n.startswith("_") or n in ("__init__", "__int__", "__index__")}
            actual |= {n for n in ("__eq__", "__hash__") if vars(cls).get(n) is not None}
            if "__init__" in actual and cls.__init__ is object.__init__:
                actual.discard("__init__")
        stub = public(stub_members)
        if "__init__" not in stub:
            # pybind11 gives classes without a constructor an __init__ that raises.
            actual.discard("__init__")
        assert stub == actual, f"{cls_name}: only in stub {stub - actual}; only in module {actual - stub}"


def test_package_reexports_the_module():
    top, _ = stub_names()
    for name in top:
        if not name.startswith("_"):
            assert getattr(zoro, name) is getattr(_zoro, name), name

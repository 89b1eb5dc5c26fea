"""The policy front end is pure: YAML -> model -> compiled hook as plain
data.  No module of tetrahost/policy/ may import the sensors, the runtime,
the BPF wrappers or cffi (the kernel side packs what it compiles), and it
works without the compiled extension."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]
POLICY = ROOT / "tetrahost" / "policy"
FORBIDDEN = ("tetrahost.sensors", "tetrahost.bpf", "tetrahost.runtime", "tetrahost._libbpf", "cffi")


def imported_modules(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, relative ones made absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = "tetrahost.policy"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            # `from tetrahost import sensors` names the package in the alias
            out.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return out


def test_no_policy_module_imports_the_kernel_side():
    files = sorted(POLICY.glob("*.py"))
    assert len(files) > 20
    bad = [f"{f.relative_to(ROOT)}:{line}: imports {module}"
           for f in files for line, module in imported_modules(f)
           if any(module == x or module.startswith(x + ".") for x in FORBIDDEN)]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom ..sensors import attach\nif True:\n    from tetrahost import bpf\n")
    found = [m for _, m in imported_modules(sample)]
    assert "tetrahost.sensors" in found and "tetrahost.bpf" in found


_BLOCKED = textwrap.dedent("""
    import sys

    class Blocker:
        # no extension, no cffi, no kernel side: as on a checkout never built
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "cffi" or name in ("tetrahost._libbpf", "tetrahost.bpf.native") \\
                    or name.startswith(("tetrahost.sensors", "tetrahost.runtime")):
                raise ImportError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    import tetrahost.policy
    from tetrahost.events.namespaces import HostNamespaces
    from tetrahost.policy.compile import CompileError, compile_hook

    result = tetrahost.policy.load_path(sys.argv[1])
    assert result.ok, [e.render() for e in result.errors]
    hooks = [h for p in result.policies for h in p.hooks]
    compiled = [compile_hook(h, i + 1, HostNamespaces.unknown()) for i, h in enumerate(hooks)]
    print(len(compiled), compiled[0].config.selectors[0].action, sorted(m for m in sys.modules if "cffi" in m))
""")


def test_policies_load_and_compile_without_the_extension(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(textwrap.dedent("""\
        apiVersion: cilium.io/v1alpha1
        kind: TracingPolicy
        metadata: {name: cryptominers}
        spec:
          kprobes:
          - call: security_bprm_check
            syscall: false
            args: [{index: 0, type: linux_binprm}]
            selectors:
            - matchArgs: [{index: 0, operator: Postfix, values: [/xmrig]}]
              matchActions: [{action: Sigkill}]
        """))
    script = tmp_path / "run.py"
    script.write_text(_BLOCKED)
    proc = subprocess.run([sys.executable, str(script), str(policy)], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    from tetrahost.constants import TH_ACTION_SIGKILL
    assert proc.stdout.split() == ["1", str(TH_ACTION_SIGKILL), "[]"]


# -- the agent hands components services, not itself ---------------------------------------

PACKAGE = ROOT / "tetrahost"


def _module_name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_only_the_command_line_knows_the_agent():
    """Components get runtime.services.Services at start(): none imports the
    agent (tetrahost.daemon) to reach its attributes; only the CLI builds one."""
    bad = [f"{f.relative_to(ROOT)}:{line}: imports {module}"
           for f in sorted(PACKAGE.rglob("*.py")) if f.name != "daemon.py" and "cli" not in f.parts
           for line, module in imported_modules(f)
           if module == "tetrahost.daemon" or module.startswith("tetrahost.daemon.")]
    assert not bad, "\n".join(bad)


def test_components_start_with_services():
    """Every component's start() takes the services, under that name."""
    starts = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.FunctionDef) and node.name == "start" and len(node.args.args) == 2:
                starts[f"{f.relative_to(ROOT)}:{node.lineno}"] = node.args.args[1].arg
    components = {where: arg for where, arg in starts.items()
                  if any(p in where for p in ("control/server", "metrics.py", "notify.py", "export/filters",
                                              "runtime/reconciler", "runtime/binwatch"))}
    assert len(components) == 6, starts
    assert set(components.values()) == {"services"}, components

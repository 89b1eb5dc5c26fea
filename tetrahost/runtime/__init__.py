"""The policy lifecycle at run time, above the pure front end (tetrahost.policy)
and the kernel side (tetrahost.sensors):

- manager.py: PolicyManager, the loaded policies and their hooks (compile,
  plan, attach, replace new-before-old, unload, retry); state.py its records,
  apply.py a load done one hook per step;
- warmpool.py: verified spare hook objects, so a reload only attaches;
- adoption.py: hooks a previous agent pinned, taken over as they run;
- reconciler.py: a policy directory kept in step with the manager (inotify);
- policy_files.py: the control socket's add/delete of policy files;
- binwatch.py: uprobe/USDT hooks following their replaced binaries.
"""

"""conflux status: the state of the project at a glance."""

from conflux.cli._output import add_json, open_engine, print_json


def add_parser(sub):
    p = sub.add_parser("status", help="entities, operations, environments, conflicts, "
                                      "violations, core in use",
                       description="Summarise the project: entities per environment, "
                                   "operations, conflicts, violations, the clock and which "
                                   "merge core is running.")
    add_json(p)
    p.set_defaults(handler=run)


def run(args):
    from conflux.status import project_status

    engine = open_engine(args)
    st = project_status(engine)
    if args.json:
        print_json(st | {"violation_list": engine.violations()})
        return 0
    core = {"c": "compiled (Cython)", "py": "pure Python (slower fallback)"}[st["core"]]
    print(f"project      {st['project']} {st['schema_version']}  ({st['directory']})")
    print(f"core         {core}")
    print(f"operations   {st['operations']}  (clock {st['clock'] or '-'})")
    print(f"records      {st['records']}")
    for env, info in st["environments"].items():
        parent = f" <- {info['inherits']}" if info["inherits"] else " (base)"
        print(f"env          {env}{parent}: {info['entities']} entities")
    print(f"conflicts    {st['conflicts']}" + ("  (see 'conflux conflicts')"
                                                if st["conflicts"] else ""))
    print(f"violations   {st['violations']}")
    for v in engine.violations():
        print(f"  {v['env']}: {v['entity_id']}.{v['field']}: {v['message']}")
    m = st["last_milestone"]
    if m and m.get("node"):  # the cluster's: its seq is the making daemon's
        print(f"milestone    {m['id']} {m['commit'][:12]} {m['title']!r} made by node "
              f"{m['node']} ({m['pending_operations']} operations since)")
    else:
        print(f"milestone    {m['id']} {m['commit'][:12]} {m['title']!r} at seq {m['seq']} "
              f"({m['pending_operations']} operations since)" if m else
              "milestone    none yet")
    shared = st.get("shared_log")
    if shared:
        if shared["reachable"]:
            others = ", ".join(f"{n['node']} ({n['seen_ms_ago']} ms ago)"
                               for n in shared["nodes"] if n["node"] != shared["node"])
            print(f"shared log   {shared['url']}: node {shared['node']}, "
                  f"{shared['lag_ops']} ops behind ({shared['lag_ms']} ms); other nodes: "
                  f"{others or 'none seen in the last minute'}")
            leases = shared.get("leases")
            if leases:
                print("leases       " + "; ".join(
                    f"{role}: node {h['node']} since {h['since']}" if h else f"{role}: none"
                    for role, h in leases.items()))
        else:
            print(f"shared log   {shared['url']}: cannot be reached ({shared['error']})")
    if st.get("webhooks"):
        from conflux.webhooks import describe_status

        print(f"webhooks     {describe_status(st['webhooks'])}")
    watchers = st.get("watchers") or {}
    if watchers.get("processes"):
        print(f"watchers     {watchers['open']} open watch stream(s) in "
              f"{watchers['processes']} daemon process(es)")

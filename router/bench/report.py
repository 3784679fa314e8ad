"""Writes a run's results: <out>/results.json, <out>/throughput.png (matplotlib) and the markdown
report <out>.md (docs/benchmarks.md for --out docs/benchmarks), and checks the targets."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

OURS = ("ours (embedded)", "ours (RabbitMQ)")
NOTES = "<!-- notes: written by hand; `router bench` keeps everything from this line on -->"


def _f(x: Any, nd: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{nd}f}"


def _t(target: str, value: Any, met: bool | None, note: str = "") -> dict[str, Any]:
    return {"target": target, "value": value, "met": met, "note": note}


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    s = r["sections"]
    out = []
    if "parse" in s:
        v = s["parse"]["payloads"]["oru"]["msg_s"]["ours"]
        out.append(_t("parse+map ≥ 5,000 msg/s on one core (ORU^R01, 11 segments)", f"{v:,.0f} msg/s", v >= 5000))
    if "e2e" in s:
        e = s["e2e"]
        best = max(e["ours"], key=lambda k: e["ours"][k]["msg_s"])
        v = e["ours"][best]["msg_s"]
        out.append(_t("end to end durable ≥ 1,500 msg/s", f"{v:,.0f} msg/s ({best} worker(s))", v >= 1500,
                      "quick run: short window" if r["plan"]["quick"] else ""))
        ratio = e["ratio"].get(best)
        out.append(_t("end to end ≥ 0.5 of the raw pipeline", f"{ratio:.2f} ({best} worker(s))" if ratio else "–",
                      (ratio >= 0.5) if ratio else None))
    if "mllp" in s:
        m = s["mllp"]
        for name in OURS:
            o = m["targets"].get(name, {}).get("open")
            if o:
                out.append(_t(f"MLLP ACK p99 ≤ 25 ms at {m['open_loop']['offered_msg_s']:.0f} msg/s offered, {name}",
                              f"{o['p99_ms']:.1f} ms", o["p99_ms"] <= 25))
        for peer in m["targets"]:
            if peer in OURS:
                continue
            for name in OURS:
                if name not in m["targets"]:
                    continue
                worse = [n for n in m["connections"] if m["targets"][name]["closed"][str(n)]["msg_s"]
                         < m["targets"][peer]["closed"][str(n)]["msg_s"]]
                vals = ", ".join(f"{n}: {m['targets'][name]['closed'][str(n)]['msg_s']:,.0f} vs "
                                 f"{m['targets'][peer]['closed'][str(n)]['msg_s']:,.0f}" for n in m["connections"])
                out.append(_t(f"ingest ≥ {peer} (storing nothing), {name} storing durably",
                              f"msg/s by connections {vals}", not worse,
                              f"slower at {', '.join(map(str, worse))} connection(s)" if worse else ""))
        for peer, why in m["skipped"].items():
            out.append(_t(f"ingest ≥ {peer}", "skipped", None, why))
    if "store" in s:
        sizes = s["store"]["search"]
        if "1000000" in sizes:
            v = sizes["1000000"]["p95_ms_worst"]
            out.append(_t("FHIR search p95 ≤ 50 ms at 1,000,000 Observations (worst query of the mix)",
                          f"{v:.1f} ms", v <= 50))
        else:
            n = max(sizes, key=int) if sizes else None
            out.append(_t("FHIR search p95 ≤ 50 ms at 1,000,000 Observations", "not measured", None,
                          f"this run loaded {int(n):,} Observations" if n else ""))
    if "memory" in s:
        v = s["memory"]["worker_peak_rss_mb"]
        out.append(_t("worker RSS ≤ 200 MB (peak, end-to-end run)", f"{v:.0f} MB", v <= 200))
    return out


def plot(r: dict[str, Any], path: Path) -> str | None:
    """The PNG; None, or the reason it was not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib not installed ({exc})"
    s = r["sections"]
    panels = [k for k in ("mllp", "e2e") if k in s]
    if not panels:
        return "no MLLP or end-to-end section in this run"
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), squeeze=False)
    for ax, key in zip(axes[0], panels):
        if key == "mllp":
            m = s["mllp"]
            for name, t in m["targets"].items():
                xs = [int(n) for n in t["closed"]]
                ax.plot(xs, [t["closed"][str(n)]["msg_s"] for n in xs], marker="o",
                        linestyle="-" if name in OURS else "--", label=name + ("" if name in OURS else " (stores nothing)"))
            ax.set_xscale("log", base=2)
            ax.set_xticks(m["connections"], [str(c) for c in m["connections"]])
            ax.set_xlabel("MLLP connections (closed loop)")
            ax.set_title("MLLP ingest, ACK after durable enqueue (ours)")
        else:
            e = s["e2e"]
            xs = [int(n) for n in e["ours"]]
            ax.plot(xs, [e["ours"][str(n)]["msg_s"] for n in xs], marker="o", label="ours: MLLP → RabbitMQ → workers → PostgreSQL")
            ax.plot(xs, [e["raw"][str(n)]["msg_s"] for n in xs], marker="s", linestyle="--",
                    label="raw limit: pika confirms → consume → COPY")
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xlabel("worker / consumer processes")
            ax.set_title("End to end, messages stored per second")
        ax.set_ylabel("messages per second")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    mach = r["machine"]
    fig.suptitle(f"{mach['cores_logical']} cores, {mach['memory_gb']} GB; load average "
                 f"{r['load_average_before'][0]:.1f} at start" + (" — QUICK RUN" if r["plan"]["quick"] else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def markdown(r: dict[str, Any], png: str | None, out_rel: str) -> str:
    s, mach, p = r["sections"], r["machine"], r["plan"]
    L: list[str] = ["# Benchmarks", ""]
    L.append(f"Results of `{r['command']}`, started {r['started']}, {r['total_s'] / 60:.1f} minutes"
             + (" — **a quick run: short windows and small sizes, a smoke test, not figures to quote**." if p["quick"] else "."))
    L += ["", "## Machine", "",
          f"- CPU: {mach['cpu']} — {mach['cores_logical']} logical cores ({mach['cores_physical']} physical); "
          f"memory {mach['memory_gb']} GB; {mach['os']}",
          f"- load average (1/5/15 min) at start {', '.join(f'{x:.2f}' for x in r['load_average_before'])}, at end "
          f"{', '.join(f'{x:.2f}' for x in r['load_average_after'])} — the machine is shared: other work ran beside "
          "the benchmark, and the load generator, servers, RabbitMQ and PostgreSQL all share these cores",
          *(f"- {name}: started {v['started']}, load average {v['load_average_before'][0]:.2f} before, "
            f"{v['load_average_after'][0]:.2f} after ({r['durations_s'][name] / 60:.1f} min)"
            + (f", router at commit {v['git_commit']}" if v.get("git_commit") else "")
            for name, v in r.get("section_runs", {}).items()),
          f"- Python {mach['python']}, PostgreSQL {mach['postgresql']}, RabbitMQ {mach['rabbitmq']}, Node.js {mach['node']}",
          "- packages: " + ", ".join(f"{k} {v}" for k, v in mach["packages"].items() if v),
          f"- router at commit {mach['git_commit']}" + (" with uncommitted changes in the work tree" if mach["git_tree_modified"] else ""),
          ""]
    L += ["## How it was run, and how to rerun it", "",
          "```", "make setup   # or: pip install -e '.[bench]'", "router bench                      # full run (about an hour): docs/benchmarks.md, docs/benchmarks/",
          "router bench --quick              # under a minute, into var/bench-quick(.md)",
          "router bench --only parse,mllp    # some sections; --out DIR; --broker-url / --database-url",
          "router bench --resume             # after a run that stopped: keep its finished sections (checkpoint.json)",
          "```", "",
          "RabbitMQ and PostgreSQL must be running (defaults: amqp://guest:guest@127.0.0.1:5672/%2F and "
          "postgresql+psycopg://root@127.0.0.1:5432/test); every run uses a fresh queue namespace and fresh PostgreSQL "
          "schemas and removes them. The engine runs as the real CLI (`router run --no-workers` for the listener, "
          "`router worker` for workers) with the shipped ORU^R01 and ADT mappings into the record store; the load "
          "generator (router/bench/load.py, asyncio) runs in the benchmark's own process. The Node.js peer is "
          "installed by `npm install` into benchmarks/node-peer/node_modules on first use. The sizes of this run: "
          f"parse {p['parse_seconds']} s per pipeline; MLLP {p['mllp_seconds']} s per connection count plus "
          f"{p['open_seconds']} s open loop; end to end {p['e2e_seconds']} s per worker count ({p['e2e_warmup']} s warm-up "
          f"excluded); search at {', '.join(f'{n:,}' for n in p['search_sizes'])} Observations, {p['search_queries']} "
          f"queries of each kind; {p['write_bundles']} bundles per write mode. Raw numbers: `{out_rel}/results.json`.", ""]
    L += ["## Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
    for t in r["targets"]:
        met = {True: "yes", False: "**no**", None: "–"}[t["met"]]
        L.append(f"| {t['target']} | {t['value']}{' — ' + t['note'] if t['note'] else ''} | {met} |")
    L.append("")
    if png:
        L += [f"![throughput]({out_rel}/{png})", ""]
    if "parse" in s:
        ps = s["parse"]
        names = ["ours", "str.split", "python-hl7", "hl7apy+fhir.resources"]
        L += ["## 1. Parse + map in process (one core)", "",
              "ours = parse, map with the shipped mapping, serialise the FHIR Bundle; str.split = split into segments "
              "and fields only (the floor); python-hl7 = `hl7.parse` only (it has no mapping); hl7apy+fhir.resources = "
              "`parse_message` with groups, then building, validating and serialising the same Bundle with "
              "fhir.resources (the field picking is not re-implemented, so this baseline is flattered). "
              "Ratio = ours / baseline.", "",
              "| payload | bundle resources | " + " | ".join(f"{n} msg/s" for n in names) + " | ours ÷ python-hl7 | ours ÷ hl7apy+fhir |",
              "| --- | ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: |"]
        for v in ps["payloads"].values():
            L.append(f"| {v['label']} | {v['bundle_resources']} | " + " | ".join(_f(v["msg_s"].get(n)) for n in names)
                     + f" | {_f(v['ours_ratio'].get('python-hl7'), 2)} | {_f(v['ours_ratio'].get('hl7apy+fhir.resources'), 1)} |")
        for k, why in ps["skipped"].items():
            L.append(f"\n{k} skipped: {why}")
        L.append("")
    if "mllp" in s:
        m = s["mllp"]
        L += ["## 2. MLLP ingest with durable ACK", "",
              f"{m['payload']}; closed loop (each connection sends, waits for its ACK, sends the next). Ours answers AA "
              "only once the message is durably enqueued (embedded: SQLite queue, fsync'd group commit; RabbitMQ: "
              "publisher confirm) and journals it; the peers answer AA and store nothing.", "",
              "| server | connections | msg/s | ACK p50 ms | ACK p99 ms | ACK max ms | not AA | errors |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, t in m["targets"].items():
            for n, c in t["closed"].items():
                L.append(f"| {name} | {n} | {_f(c['msg_s'])} | {_f(c['p50_ms'], 2)} | {_f(c['p99_ms'], 2)} | "
                         f"{_f(c['max_ms'], 1)} | {c['not_accepted']} | {c['errors']} |")
        ol = m["open_loop"]
        L += ["", f"Open loop: {ol['offered_msg_s']:.0f} msg/s offered over {ol['connections']} connections for "
              f"{ol['seconds']} s, latency from each message's scheduled send time:", "",
              "| server | achieved msg/s | ACK p50 ms | ACK p99 ms | ACK max ms | not AA | no ACK in 60 s |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, t in m["targets"].items():
            o = t.get("open")
            if o:
                L.append(f"| {name} | {_f(o['msg_s'])} | {_f(o['p50_ms'], 2)} | {_f(o['p99_ms'], 2)} | "
                         f"{_f(o['max_ms'], 1)} | {o['not_accepted']} | {o['errors']} |")
        for k, why in m["skipped"].items():
            L.append(f"\n{k} skipped: {why}")
        L.append("")
    if "e2e" in s:
        e = s["e2e"]
        L += ["## 3. End to end: MLLP → RabbitMQ → workers → PostgreSQL", "",
              f"{e['payload']} over {e['connections']} MLLP connections (closed loop) for {e['seconds']:.0f} s per worker "
              f"count; throughput = messages whose processing was committed to PostgreSQL per second, between the "
              f"warm-up ({e['warmup_s']:.0f} s) and the end of the window; backlog = accepted (ACKed) but not yet stored when "
              "the window closed. Raw limit: pika publish with confirms (256 in flight) → consumers with prefetch → COPY of "
              "the same rows (the mapped Bundle's resources as JSON + a journal row) 50 messages per transaction → ack; "
              "no HL7, no mapping, no indexing.", "",
              "| worker processes | ours msg/s stored | ours accepted msg/s | backlog | ours rows/msg | raw msg/s stored | raw rows/msg | ours ÷ raw |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for n, o in e["ours"].items():
            rw = e["raw"][n]
            L.append(f"| {n} | {_f(o['msg_s'])} | {_f(o['accepted_msg_s'])} | {o['backlog_at_end']:,} | "
                     f"{_f(o['rows_per_message'], 1)} | {_f(rw['msg_s'])} | {rw['rows_per_message']} | {_f(e['ratio'][n], 2)} |")
        L.append("")
    if "store" in s:
        st = s["store"]
        L += ["## 4. Store (PostgreSQL)", "",
              "FHIR search through `router.store.search.search` (a connection per query; SQL, decoding and the Bundle "
              "timed), after a bulk load (benchmarks/search.py).", "",
              "| Observations | resources | load s | query | p50 ms | p95 ms | max ms | entries |",
              "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
        for n, v in st["search"].items():
            for q, x in v["queries"].items():
                L.append(f"| {int(n):,} | {v['resources']:,} | {v['load_s']:.0f} | `{q}` | {x['p50_ms']:.2f} | "
                         f"{x['p95_ms']:.2f} | {x['max_ms']:.1f} | {x['entries']:.1f} |")
        w = st["writes"]
        L += ["", f"Transaction bundles ({w['resources_per_bundle']} resources: Patient upserted by СНИЛС, DiagnosticReport, "
              f"2 Observations), {w['bundles']:,} per mode: one bundle per commit **{w['one_per_commit_s']:,.0f}/s**; "
              f"{w['batch']} per commit **{w['batched_s']:,.0f}/s**.", ""]
    if "memory" in s:
        mm = s["memory"]
        L += ["## 5. Memory (peak RSS during the end-to-end run, psutil every 0.25 s)", "",
              "| worker processes | listener MB | largest worker MB |", "| ---: | ---: | ---: |"]
        for n, v in mm["per_run"].items():
            L.append(f"| {n} | {v['listener']:.0f} | {v['worker_max']:.0f} |")
        L.append("")
    return "\n".join(L) + "\n"


def write(r: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js = out / "results.json"
    png = out / "throughput.png"
    why = plot(r, png)
    r["plot"] = png.name if why is None else None
    if why:
        r["plot_skipped"] = why
    js.write_text(json.dumps(r, indent=1, ensure_ascii=False, default=str) + "\n")
    md = out.parent / f"{out.name}.md"
    notes = ""
    if md.exists():  # hand-written analysis below the marker survives a rerun
        old = md.read_text()
        if NOTES in old:
            notes = "\n" + old[old.index(NOTES):]
    md.write_text(markdown(r, r["plot"], out.name) + notes)
    return {"json": js, "markdown": md, **({"png": png} if why is None else {})}

"""Medians, ratios, targets, and the three outputs: a text table on stdout,
JSON and a markdown report under bench/results/."""
import json
import os
import statistics



LABELS = {"ssh": "ssh -R (OpenSSH)", "relay": "least relay", "relay-copy": "least relay, copying",
          "relay-noise": "least relay, encrypting as noise",
          "relay-noise-aesgcm": "least relay, encrypting as noise-aesgcm",
          "relay-tls": "least relay, encrypting as tls",
          "relay-uring": "least relay, io_uring"}


def label(target):
    """The column heading of a target: ssh is OpenSSH's ssh -R, not rathole."""
    return LABELS.get(target, target)


def ssh_note(meta, md):
    """What the ssh -R column is, or "" when it is not in this run."""
    s = meta.get("ssh")
    if not s:
        return ""
    text = ("%s: OpenSSH's `ssh -R` through an sshd on loopback (%s; cipher %s, key exchange "
            "%s): an encrypted tunnel, to compare with the noise and tls columns, not with "
            "plain tcp. Its CPU is the sshd process(es) serving the session + the ssh client; "
            "TCP loads only (ssh -R carries no UDP)." % (
                label("ssh"), s.get("version", "?").split(",")[0], s.get("cipher") or "?",
                s.get("kex") or "?"))
    return text if md else text.replace("`", "")


def tunnel_targets(present):
    return [t for t in present if t not in ("direct", "socat")]


def median_of(rounds, key):
    vals = [r[key] for r in rounds if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def machine_cost(load, direct_rounds):
    """D: the machine's CPU per unit of work in the direct run (load
    generator, service, kernel), where that run is CPU-bound (a single
    iperf3 stream is bound by its two threads instead: then None)."""
    if not load.higher_better or not direct_rounds:
        return None
    busy = median_of(direct_rounds, "cores_busy")
    rate = median_of(direct_rounds, load.metric)
    if not busy or not rate or busy < 0.9 * (os.cpu_count() or 1):
        return None
    if load.metric == "gbps":
        return busy * 8 / rate * 1e3		# CPU ms per GB
    return busy / rate * 1e6			# CPU us per request


def ceiling(load, direct_rounds, tunnel_cost):
    """The ratio a CPU-bound machine allows: the direct run keeps the cores
    busy for D per unit of work; through the tunnel each unit costs D plus
    the tunnel's T, so at best the ratio is D / (D + T)."""
    d = machine_cost(load, direct_rounds)
    if d is None or tunnel_cost is None:
        return None
    return d / (d + tunnel_cost)


def floor_ceilings(loads, results, floor, duration):
    """With T the floor (the kernel's least work for the tunnel's extra TCP
    hops; for encrypted bulk, also the cipher's), D / (D + T) bounds what any
    tunnel speaking this protocol can reach on this machine."""
    for load in loads:
        f = floor.get(load.name)
        if f:
            f["d_us"] = machine_cost(load, results.get(load.name, {}).get("direct", []))
            f["ceiling"] = ceiling(load, results.get(load.name, {}).get("direct", []), f["us"])
        for key, f in floor.items():
            if key.startswith(load.name + ":"):
                per = results.get(load.name, {})
                copy = [load.cost(r, duration) for r in per.get("relay-copy", [])]
                bulk_floor_terms(f, [c for c in copy if c is not None])
                if "ms_gb" in f:
                    bulk_floor_bound(f, per.get("direct", []))


def bulk_floor_terms(f, copy_relay_costs):
    """F = the two copying hops (the copying least relay's CPU per GB in
    this run, or the kernel's least for them) + encryption + decryption."""
    crypto = f["enc_ms_gb"] + f["dec_ms_gb"]
    if copy_relay_costs:
        hops = statistics.median(copy_relay_costs)
        what = "the copying least relay %.0f" % hops
    elif f["hop_ms_gb"]:
        hops = 2 * f["hop_ms_gb"]
        what = "2 copying TCP hops %.0f (bench/floor.c)" % hops
    else:
        return		# the copying relay was to measure the hops, and it did not
    f["ms_gb"] = hops + crypto
    samples = f.get("speed_samples")
    if samples and len(samples["enc"]) > 1:
        speed = "openssl speed, median of %d rounds: encrypt %.0f-%.0f, decrypt %.0f-%.0f" % (
            len(samples["enc"]), min(samples["enc"]), max(samples["enc"]), min(samples["dec"]),
            max(samples["dec"]))
    else:
        speed = "openssl speed" + (", in the round" if samples else "")
    f["how"] = "%s + %s: encrypt %.0f, decrypt %.0f (%s)" % (
        what, f["cipher"], f["enc_ms_gb"], f["dec_ms_gb"], speed)


def bulk_floor_bound(f, direct_rounds):
    """An encrypted tunnel's floor F (CPU ms per GB) against the direct run,
    which moves R GB/s keeping B cores busy (D = B / R per GB): through the
    tunnel a GB costs at least D + F on the machine's N cores, so the ratio
    is at most N / (D + F) / R. A single iperf3 stream leaves part of a core
    idle direct (B < N); that part is counted as available, so this bounds
    from above even then."""
    busy = median_of(direct_rounds, "cores_busy")
    gbps = median_of(direct_rounds, "gbps")
    if not busy or not gbps:
        return
    rate = gbps / 8				# GB/s
    d = busy / rate * 1e3			# ms per GB
    f["d_ms_gb"] = d
    f["ceiling"] = (os.cpu_count() or 1) / ((d + f["ms_gb"]) / 1e3) / rate


def summarize(loads, results, duration):
    """results[load][target] = [per-round dicts] -> summary[load][target] =
    {metric: median, ..., "ratio": median / direct median, "n": rounds}."""
    summary = {}
    for load in loads:
        per = results.get(load.name, {})
        direct = median_of(per.get("direct", []), load.metric)
        summary[load.name] = {}
        for target, rounds in per.items():
            s = {"n": len(rounds)}
            for key in (load.metric,) + tuple(load.extra) + (
                    "cpu_server_s", "cpu_client_s", "cores_busy"):
                s[key] = median_of(rounds, key)
            s["rounds"] = [r.get(load.metric) for r in rounds]
            costs = [load.cost(r, duration) for r in rounds]
            costs = [c for c in costs if c is not None]
            s["cost"] = statistics.median(costs) if costs else None
            s["ceiling"] = ceiling(load, per.get("direct", []), s["cost"])
            if load.higher_better and direct and s[load.metric] is not None:
                s["ratio"] = s[load.metric] / direct
            summary[load.name][target] = s
    return summary


def check_targets(summary, held, idle, binary, floor=None):
    """The issue's targets, each with the value measured in this run. A
    ratio that even the floor does not allow is marked out of reach."""
    out = []
    floor = floor or {}

    def get(load, target, key):
        return summary.get(load, {}).get(target, {}).get(key)

    def add(name, goal, value, ok, shown, out_of_reach=False):
        out.append({"target": name, "goal": goal, "value": value,
                    "ok": None if value is None else bool(ok), "shown": shown,
                    "out_of_reach": out_of_reach})

    def ratio_target(name, load, target, least):
        r, c = get(load, target, "ratio"), get(load, target, "ceiling")
        f = floor.get(load if target == "tcp" else load + ":" + target, {}).get("ceiling")
        # a miss that two decimals would round up to the goal shows three
        shown = ("%.3fx" % r if r is not None and r < least and round(r, 2) >= least
                 else fmt_ratio(r))
        relay = get(load, "relay" if target == "tcp" else "relay-" + target, "ratio")
        uring = get(load, "relay-uring", "ratio") if target == "tcp" else None
        # a floor under the goal that two decimals would round up to it shows three
        f_shown = ("%.3fx" % f if f is not None and f < least and round(f, 2) >= least
                   else fmt_ratio(f))
        notes = (["CPU-bound ceiling %.2fx" % c] if r is not None and c else []) + (
            ["any tunnel <= %s (floor)" % f_shown] if r is not None and f else []) + (
            ["the least %srelay %.2fx" % ("" if target == "tcp" else "encrypting ", relay)]
            if r is not None and relay else []) + (
            ["on io_uring %.2fx" % uring] if r is not None and uring else [])
        add(name, ">= %.2fx direct" % least, r, r is not None and r >= least,
            shown + (" (%s)" % "; ".join(notes) if notes else ""),
            out_of_reach=f is not None and f < least)

    ratio_target("TCP bulk (tcp, 1 stream)", "tcp_bulk", "tcp", 0.55)
    ratio_target("HTTP keep-alive requests/s", "http_keepalive", "tcp", 0.60)
    p, d = get("http_keepalive", "tcp", "p99_ms"), get("http_keepalive", "direct", "p99_ms")
    r = p / d if p and d else None
    add("HTTP keep-alive p99 latency", "<= 2x direct", r, r is not None and r <= 2.0,
        "%s (%.2f ms vs %.2f ms)" % (fmt_ratio(r), p, d) if r else "-")
    ratio_target("New connections/s (Connection: close)", "http_close", "tcp", 0.45)
    udp = [k for k in summary if k.startswith("udp_") and k[4:].isdigit()]
    top = max(udp, key=lambda k: int(k[4:])) if udp else None
    if top:
        v = get(top, "tcp", "loss_pct")
        add("UDP at %s Mb/s offered: loss" % top[4:], "<= 1 %", v, v is not None and v <= 1.0,
            "%.2f %%" % v if v is not None else "-")
    h = held.get("tcp") if held else None
    if h:
        add("Held connections all echoing", "all of %d" % h["held"], h["echoed"],
            h["echoed"] == h["held"] and h["held"] > 0,
            "%d of %d (asked %d)" % (h["echoed"], h["held"], h["asked"]))
        v = h["kib_per_conn"]
        add("RSS growth per held connection (server+client)", "<= 2 KiB", v, v <= 2.0,
            "%.2f KiB" % v)
    t = idle.get("tcp") if idle else None
    if t:
        v = t["total_kib"] / 1024
        pair = ", distinct pages %.2f MiB" % (t["pair_kib"] / 1024) if "pair_kib" in t else ""
        starts = t.get("starts_kib")
        if starts:
            # every fresh start must fit, not just the one the rounds used
            v = max(starts + [t["total_kib"]]) / 1024
            shown = "%.2f MiB at most over %d starts (median %.2f MiB; private %.2f MiB%s)" % (
                v, len(starts) + 1, statistics.median(starts + [t["total_kib"]]) / 1024,
                t["anon_kib"] / 1024, pair)
        else:
            shown = "%.2f MiB (private %.2f MiB%s)" % (v, t["anon_kib"] / 1024, pair)
        add("RSS at idle, server+client (tcp)", "<= 4 MiB", v, v <= 4.0, shown)
    ratio_target("Noise bulk", "tcp_bulk", "noise", 0.25)
    if get("tcp_bulk", "noise-aesgcm", "ratio") is not None:
        # not the target's configuration (noise's default cipher is ChaChaPoly):
        # what the other cipher gets on this machine, measured beside it
        ratio_target("Noise bulk, AESGCM pattern (informational)", "tcp_bulk", "noise-aesgcm",
                     0.25)
    ratio_target("TLS bulk", "tcp_bulk", "tls", 0.30)
    for tr in ("tcp", "noise"):
        lim, paced = get("tcp_limited", tr, "cost"), get("tcp_paced", tr, "cost")
        if lim and paced:
            r = lim / paced
            add("A stream under bandwidth_limit (%s): CPU per GB against the same rate "
                "unlimited" % tr, "<= 1.5x", r, r <= 1.5,
                "%.2fx (%.0f vs %.0f CPU ms/GB, at %.0f vs %.0f Mb/s)" % (
                    r, lim, paced, get("tcp_limited", tr, "gbps") * 1e3,
                    get("tcp_paced", tr, "gbps") * 1e3))
    if binary:
        v = binary["stripped_kib"]
        add("Stripped binary, every feature", "<= 250 KiB", v, v <= 250, "%.1f KiB" % v)
        v = binary.get("tls0_stripped_kib")
        add("Stripped binary, make TLS=0", "< the full one", v,
            v is not None and v < binary["stripped_kib"],
            "%.1f KiB" % v if v is not None else binary.get("tls0_note", "-"))
    return out


def fmt_ratio(r):
    return "%.2fx" % r if r is not None else "-"


def fmt_value(v, unit):
    if v is None:
        return "-"
    if unit in ("Gb/s",):
        return "%.2f" % v
    if unit == "% lost":
        return "%.2f%%" % v
    if v >= 100:
        return "%.0f" % v
    return "%.2f" % v


def vhost_rows(summary, tunnels):
    """Per tunnel: a virtual host (the shared listener, routed by Host) against
    the service's dedicated port, as ratios of the medians and CPU per request."""
    rows = []
    for t in tunnels:
        cells = [label(t)]
        for vh, own in (("vhost_keepalive", "http_keepalive"), ("vhost_close", "http_close")):
            a, b = summary.get(vh, {}).get(t), summary.get(own, {}).get(t)
            if not a or not b or not a.get("rps") or not b.get("rps"):
                cells += ["", ""]
                continue
            cells.append("%.0f / %.0f (%s)" % (a["rps"], b["rps"], fmt_ratio(a["rps"] / b["rps"])))
            ca, cb = a.get("cost"), b.get("cost")
            cells.append("%.1f / %.1f" % (ca, cb) if ca is not None and cb is not None else "")
        if any(cells[1:]):
            rows.append(cells)
    return rows


def table_rows(loads, summary, targets):
    """Rows of strings: load title, then one cell per target."""
    rows = []
    for load in loads:
        s = summary.get(load.name, {})
        cells = []
        for t in targets:
            c = s.get(t)
            if not c:
                cells.append("")
                continue
            txt = fmt_value(c.get(load.metric), load.unit)
            if t != "direct" and c.get("ratio") is not None:
                txt += " (%s)" % fmt_ratio(c["ratio"])
            cells.append(txt)
        rows.append(["%s, %s" % (load.title, load.unit)] + cells)
        for key, label in (("p50_ms", "p50 latency, ms"), ("p99_ms", "p99 latency, ms"),
                           ("recv_mbps", "received, Mb/s")):
            if key in load.extra:
                rows.append(["  " + label] + [fmt_value(s.get(t, {}).get(key), "")
                                              if s.get(t) else "" for t in targets])
    return rows


def cpu_rows(loads, summary, tunnels):
    """Per load: CPU seconds of server + client per run, and the same per unit
    of work (the figure to compare builds with)."""
    rows = []
    for load in loads:
        s = summary.get(load.name, {})
        cells = []
        for t in tunnels:
            c = s.get(t)
            if not c or c.get("cpu_server_s") is None:
                cells.append("")
                continue
            cost, ceil = c.get("cost"), c.get("ceiling")
            cells.append("%.2f+%.2f s%s%s" % (c["cpu_server_s"], c["cpu_client_s"],
                                              ("; %.0f" if cost >= 100 else "; %.1f") % cost if cost is not None else "",
                                              "; <= %.2fx" % ceil if ceil is not None else ""))
        busy = s.get("direct", {}).get("cores_busy")
        tb = s.get("tcp", {}).get("cores_busy")
        cells.append("%.2f / %.2f" % (busy, tb) if busy is not None and tb is not None else "")
        rows.append(["%s (%s)" % (load.title, load.cost_unit)] + cells)
    return rows


def text_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def floor_rows(loads, summary, floor):
    rows = []
    for load in loads:
        f = floor.get(load.name)
        if not f:
            continue
        t = summary.get(load.name, {}).get("tcp", {}).get("cost")
        rows.append([load.title, "%.1f" % f["us"], "%.1f" % t if t else "-",
                     "%.1f" % f["d_us"] if f.get("d_us") else "-",
                     fmt_ratio(f.get("ceiling")), f["how"]])
    for key, f in sorted(floor.items()):
        name, _, transport = key.partition(":")
        load = next((l for l in loads if l.name == name), None)
        if not load or not transport or "ms_gb" not in f:
            continue
        t = summary.get(name, {}).get(transport, {}).get("cost")
        rows.append(["%s, %s (ms/GB)" % (load.title, transport), "%.0f" % f["ms_gb"],
                     "%.0f" % t if t else "-",
                     "%.0f" % f["d_ms_gb"] if f.get("d_ms_gb") else "-",
                     fmt_ratio(f.get("ceiling")), f["how"]])
    return rows


def storm_table(storm, tbl, md=False):
    """The storm load (bench/storm.py): one row per binary and side."""
    rows = []
    for name, r in storm.items():
        rec = "%.3f" % r["recover_s"] if r["recover_s"] is not None else "none in 30 s"
        rows.append([name, r["nofile"], "%d (%d free)" % (r["opened"], r["free_fds"]),
                     r["served"], r["shed"], "%.2f" % r["cpu_hold_s"], rec,
                     "%d -> %d -> %d" % (r["fds_before"], r["fds_after"], r["fds_after2"]),
                     "%d -> %d -> %d" % (r["rss_before_kib"], r["rss_after_kib"],
                                         r["rss_after2_kib"])])
    head = ("## Storm: 5x more visitors than free fds\n\nOne side under a low open file "
            "limit; 5x more visitors than it has free fds connect at once, send a byte each, "
            "hold 5 s and close. Served: their byte came back; shed: closed by the tunnel. "
            "Then the seconds until a fresh visitor echoes, and the limited side's fds and "
            "RSS before the storm, after it, and after the same storm a second time.\n\n"
            if md else
            "Storm: 5x more visitors than free fds, held 5 s (fds, RSS: the limited side)\n")
    return head + tbl(["tunnel side", "nofile", "visitors", "served", "shed",
                       "cpu in the hold, s", "first echo after, s", "fds", "RSS KiB"], rows)


def storm_checks(storm):
    """After the storm the tunnel echoes again within 2 s, and the limited
    side's fds come back (the pool may hold up to 8 more channels)."""
    out = []
    for name, r in storm.items():
        v = r["recover_s"]
        out.append({"target": "Storm (%s): echo again after the visitors left" % name,
                    "goal": "<= 2 s", "value": v, "ok": v is not None and v <= 2.0 and r["alive"],
                    "shown": "%.3f s" % v if v is not None else "none within 30 s",
                    "out_of_reach": False})
        out.append({"target": "Storm (%s): fds back" % name, "goal": "<= before + 8",
                    "value": r["fds_after"], "ok": max(r["fds_after"], r["fds_after2"]) <=
                    r["fds_before"] + 8,
                    "shown": "%d -> %d -> %d" % (r["fds_before"], r["fds_after"],
                                                 r["fds_after2"]),
                    "out_of_reach": False})
        # malloc keeps what the storm's longest-lived allocations pin: bounded by
        # the fd limit, so a second storm must not add to it
        grow = r["rss_after2_kib"] - r["rss_after_kib"]
        out.append({"target": "Storm (%s): RSS after a second storm" % name,
                    "goal": "<= after the first + 64 KiB", "value": grow, "ok": grow <= 64,
                    "shown": "%d -> %d -> %d KiB" % (r["rss_before_kib"], r["rss_after_kib"],
                                                     r["rss_after2_kib"]),
                    "out_of_reach": False})
    return out


def ha_table(ha, tbl, md=False):
    """The high-availability loads (bench/ha.py)."""
    rows = []
    fo = [t["failover_s"] for t in ha["failover"]]
    ok = [v for v in fo if v is not None]
    rows.append(["failover: SIGKILL of one of two replicas until %d new visitors in a row "
                 "succeed (%d trials)" % (ha["failover_run"], len(fo)),
                 "median %.1f ms, max %s" % (statistics.median(ok) * 1e3, "%.1f ms" % (max(ok) * 1e3)
                                             if len(ok) == len(fo) else "none within 10 s")
                 if ok else "none within 10 s",
                 "%d failed of %d visitors that came after the killed process was gone" % (
                     sum(t["failed"] for t in ha["failover"]),
                     sum(t["visitors"] for t in ha["failover"]))])
    cost = ha["balance_cost"]
    against = {"balance, 1 replica": "no balance, 1 client",
               "balance, 2 replicas": "balance, 1 replica"}
    for name, c in cost.items():
        other = cost.get(against.get(name), {})
        ratio = ""
        if other.get("rps"):
            ratio = " (%.2fx %s)" % (c["rps"] / other["rps"], against[name])
        rows.append(["new connections per second (wrk, Connection: close): " + name,
                     "%.0f conn/s%s" % (c["rps"], ratio),
                     "CPU %.1f us/conn (server and clients), %d errors" % (
                         c["cpu_us_per_conn"], c["errors"])])
    head = ("## High availability: one service, balance = \"round_robin\"\n\n"
            "Failover: a stream of new visitors (one after another) while one of two "
            "replicas is killed; the time from the kill to the first of an unbroken run of "
            "successes. Then new connections per second through the service without "
            "`balance`, with it and one client, and with two clients (each client is another "
            "process on the same 2 cores).\n\n"
            if md else "High availability: one service, balance = \"round_robin\"\n")
    return head + tbl(["load", "measured", "also"], rows)


def ha_checks(ha):
    """Failover under 100 ms on loopback; balancing costs little."""
    if not ha:
        return []
    fo = [t["failover_s"] for t in ha["failover"]]
    worst = None if any(v is None for v in fo) else max(fo)
    out = [{"target": "Failover: SIGKILL of a replica until new visitors succeed again "
                      "(worst of %d)" % len(fo),
            "goal": "< 100 ms", "value": worst, "ok": worst is not None and worst < 0.1 and
            all(t["alive"] for t in ha["failover"]),
            "shown": "%.1f ms" % (worst * 1e3) if worst is not None else "none within 10 s",
            "out_of_reach": False}]
    # CPU per connection, not connections per second: the machine is shared,
    # and a neighbour slows a run more than it changes its cost. Even so two
    # identical setups differ by up to a fifth in a quick run here: the goal
    # catches a real cost, not a few percent
    cost = ha["balance_cost"]
    a, b = cost.get("no balance, 1 client"), cost.get("balance, 1 replica")
    if a and b:
        r = b["cpu_us_per_conn"] / a["cpu_us_per_conn"] if a["cpu_us_per_conn"] else None
        out.append({"target": "Balancing with one replica: CPU per new connection against "
                              "no balance", "goal": "<= 1.25x", "value": r,
                    "ok": r is not None and r <= 1.25,
                    "shown": "%.2fx" % r if r is not None else "-", "out_of_reach": False})
    return out


def render_checks(checks, tbl, md=False):
    rows = [[c["target"], c["goal"], c["shown"],
             "NO (out of reach)" if c["ok"] is False and c.get("out_of_reach") else
             {True: "yes", False: "NO", None: "-"}[c["ok"]]] for c in checks]
    return ("## Targets\n\n" if md else "Targets\n") + tbl(["target", "goal", "measured", "met"],
                                                            rows)


def render(meta, loads, summary, targets_present, held, idle, binary, checks, md=False,
           floor=None, storm=None, ha=None):
    tbl = md_table if md else text_table
    parts = []
    header = ["load"] + [label(t) for t in targets_present]
    note = ssh_note(meta, md) if "ssh" in targets_present else ""
    parts.append(("## Medians (ratio to direct)\n\n" if md else "Medians of %d rounds (ratio to direct)\n"
                  % meta["rounds"]) + tbl(header, table_rows(loads, summary, targets_present)) +
                 ("\n\n" + note if note else ""))
    tunnels = tunnel_targets(targets_present)
    parts.append(("## CPU of the tunnel processes\n\nPer run: CPU seconds of server + client "
                  "(utime + stime); then the same per unit of work; then the ratio a CPU-bound "
                  "machine allows, D / (D + T), with D the machine's CPU per unit in the direct "
                  "run and T the tunnel's. Last column: cores of the machine busy during the "
                  "run, direct / through tcp.\n\n" if md else
                  "CPU per run: server + client seconds; per unit of work; CPU-bound ceiling "
                  "of the ratio (last column: cores busy, direct / tcp)\n")
                 + tbl(["load (unit of the cost)"] + [label(t) for t in tunnels] + ["cores busy"],
                       cpu_rows(loads, summary, tunnels)))
    vrows = vhost_rows(summary, tunnels)
    if vrows:
        parts.append(("## Virtual host against a dedicated port\n\nThe HTTP service reached "
                      "by name on the shared listener (`http_bind_addr`, routed by `Host`) and "
                      "on its own port, through the same tunnel: requests per second, then CPU "
                      "us per request of server + client. Keep-alive routes once per "
                      "connection; `Connection: close` once per request.\n\n" if md else
                      "Virtual host against a dedicated port: req/s vhost / own port (ratio); "
                      "CPU us/req vhost / own port\n") +
                     tbl(["tunnel", "keep-alive, req/s", "keep-alive, CPU us/req",
                          "close, conn/s", "close, CPU us/req"], vrows))
    if floor:
        parts.append(("## Floor: the least the tunnel's TCP work can cost\n\nThe kernel's CPU, "
                      "per request, for the TCP hops and connections that a tunnel speaking this "
                      "protocol adds (bench/floor.c: both ends in one thread, no waiting, no "
                      "epoll, nothing in user space), beside what the tcp tunnel spent (T) and "
                      "what the machine spends per request in the direct run (D); D / (D + "
                      "floor) bounds the ratio of any such tunnel on this machine. For the "
                      "encrypted transports' bulk (ms per GB): two copying TCP hops and one "
                      "encryption and decryption at OpenSSL's own speed, against that "
                      "transport's T; the bound counts all cores as available.\n\n" if md else
                      "Floor: the kernel's least CPU per request for the tunnel's extra TCP work "
                      "(us; encrypted bulk: ms per GB), and the best ratio it leaves\n") +
                     tbl(["load", "floor", "T (tunnel)", "D (direct)", "best possible", "what"],
                         floor_rows(loads, summary, floor)))
    if idle:
        rows = []
        for t, m in idle.items():
            if "server_kib" not in m:
                rows.append([t, m.get("note", "-"), "", "", "", "", ""])
                continue
            total = str(m["total_kib"])
            if m.get("starts_kib"):
                st = m["starts_kib"]
                total += " (%d more starts: median %d, %d to %d)" % (
                    len(st), statistics.median(st), min(st), max(st))
            rows.append([label(t), m["server_kib"], m["client_kib"], total,
                         m.get("pair_kib", "-"), m["anon_kib"],
                         m.get("after_loads_total_kib", "")])
        parts.append(("## Memory at idle (KiB)\n\n"
                      "RSS of each process; their sum; the pair's distinct resident pages "
                      "(libc and OpenSSL pages that both map counted once: what the two use "
                      "together); private memory (RssAnon); the RSS sum again after the loads "
                      "(pools and freed buffers).%s\n\n" % (
                          " For ssh -R: server = the sshd process(es) serving the session "
                          "(the listening sshd, %s KiB, not counted), client = ssh."
                          % idle["ssh"].get("listener_kib", "?") if "ssh" in idle else "")
                      if md else "Memory at idle, KiB\n") +
                     tbl(["transport", "server RSS", "client RSS", "RSS sum",
                          "pair, distinct pages", "private (RssAnon)", "RSS sum after the loads"],
                         rows))
    if held:
        rows = []
        for t, h in held.items():
            rows.append([label(t), h["asked"], h["held"], h["echoed"],
                         "%d / %d" % (h["server_fds"], h["client_fds"]),
                         "%s / %s" % (h.get("fixed_fds", "-"), h.get("fits_at_most", "-")),
                         "%.2f" % h["kib_per_conn"], "%.2f" % h["server_kib_per_conn"],
                         "%.2f" % h["client_kib_per_conn"], "%.1f" % h["open_seconds"]])
        parts.append(("## Held idle connections\n\n" if md else "Held idle connections\n") +
                     tbl(["transport", "asked", "held", "echoing", "fds server / client",
                          "fixed fds / fits at most", "KiB/conn total", "server", "client",
                          "open time, s"], rows))
    if binary:
        rows = [["every feature", "%.1f" % binary["stripped_kib"], "%.1f" % binary["unstripped_kib"]]]
        if binary.get("tls0_stripped_kib") is not None:
            rows.append(["make TLS=0", "%.1f" % binary["tls0_stripped_kib"], ""])
        else:
            rows.append(["make TLS=0", binary.get("tls0_note", "-"), ""])
        parts.append(("## Binary size (KiB)\n\n" if md else "Binary size, KiB\n") +
                     tbl(["build", "stripped", "unstripped"], rows))
    if storm:
        parts.append(storm_table(storm, tbl, md))
    if ha:
        parts.append(ha_table(ha, tbl, md))
    parts.append(render_checks(checks, tbl, md))
    return "\n\n".join(parts) + "\n"


def markdown(meta, loads, summary, targets_present, held, idle, binary, checks, floor=None,
             storm=None, ha=None):
    head = ["# rathole benchmark, %s" % meta["date"], "",
            "- machine: %s, %d CPUs, %s, Linux %s" % (meta["cpu"], meta["ncpu"],
                                                       meta["memory"], meta["kernel"]),
            "- build: %s (commit %s)" % (meta["rathole"], meta["commit"]),
            "- %d rounds, %d s per run, targets alternated in each round (A/B: forward "
            "order on even rounds, reverse on odd), medians below" % (meta["rounds"], meta["duration"]),
            "- hard RLIMIT_NOFILE: %d" % meta["nofile_hard"],
            "- background load before each round (cores busy with other work on this "
            "shared machine): %s" % ", ".join("%.2f" % b for b in meta.get("background_cores", [])),
            "- tools: %s" % ", ".join(meta["tools"]),
            ""]
    return "\n".join(head) + "\n" + render(meta, loads, summary, targets_present, held, idle,
                                          binary, checks, md=True, floor=floor, storm=storm,
                                          ha=ha)


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)

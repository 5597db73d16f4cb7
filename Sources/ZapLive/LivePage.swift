import Foundation

/// The live page: no reload, no network beyond this server. It starts from the status at the
/// time it was served (so that it shows the run at once, and the verdict after the run), then
/// listens to `/events` (server-sent events carrying the status JSON) and draws the shards as a
/// heat map filling in, the workers, the counters and the merged percentiles so far.
enum LivePage {
    /// The page, starting from `status` (the status JSON).
    static func html(status: String) -> String {
        template.replacingOccurrences(of: "__INITIAL_STATUS__", with: status.replacingOccurrences(of: "</", with: "<\\/"))
    }

    static let template = """
        <!doctype html>
        <html><head><meta charset="utf-8"><title>zapfleet live</title>
        <style>
        body { font-family: sans-serif; margin: 1.5em; color: #222 }
        #verdict { padding: .6em 1em; margin: .5em 0; display: none; font-weight: bold }
        .pass { background: #d8f5d8 } .fail { background: #f8d7d7 }
        #heat { display: flex; flex-wrap: wrap; gap: 2px; max-width: 900px; margin: .5em 0 }
        #heat div { width: 10px; height: 10px; background: #ccc }
        #heat .r { background: #f0ad4e } #heat .d { background: #2e8b57 }
        table { border-collapse: collapse; margin: .5em 0 } td, th { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: right }
        th { text-align: left } .charts { display: flex; flex-wrap: wrap; gap: 16px } figure { margin: 0 } figcaption { font-weight: 600 }
        iframe { width: 100%; height: 1400px; border: 1px solid #ddd; margin-top: 1em } td:first-child, td:nth-child(2) { text-align: left }
        </style></head>
        <body>
        <h1>zapfleet <span id="scenario"></span> <small id="phase"></small></h1>
        <div id="verdict"></div>
        <div id="counts"></div>
        <div id="heat"></div>
        <h2>Workers</h2><table id="workers"></table>
        <h2>Block time so far (merged over the shards done)</h2><table id="percentiles"></table>
        <div id="charts"></div>
        <div id="final"></div>
        <script>
        "use strict";
        function ns(v) {
          if (v >= 1e9) return (v / 1e9).toFixed(2) + " s";
          if (v >= 1e6) return (v / 1e6).toFixed(2) + " ms";
          if (v >= 1e3) return (v / 1e3).toFixed(2) + " µs";
          return v + " ns";
        }
        function cell(tag, text) { const e = document.createElement(tag); e.textContent = text; return e; }
        function row(table, tag, values) { const tr = document.createElement("tr"); values.forEach(v => tr.appendChild(cell(tag, v))); table.appendChild(tr); }
        let lastCharts = null;
        function draw(s) {
          document.getElementById("scenario").textContent = s.scenario || "";
          document.getElementById("phase").textContent = s.phase;
          const c = s.counts || {};
          document.getElementById("counts").textContent = s.counts ?
            `shards: ${c.done} done, ${c.running} running, ${c.queued} queued; requeues ${c.requeues}, results refused ${c.results_refused}, bad frames ${c.bad_frames}, keys refused ${c.keys_refused}` : "waiting for the run";
          const heat = document.getElementById("heat");
          const states = s.shards || "";
          while (heat.children.length > states.length) heat.removeChild(heat.lastChild);
          while (heat.children.length < Math.min(states.length, 20000)) heat.appendChild(document.createElement("div"));
          for (let i = 0; i < heat.children.length; i++) { heat.children[i].className = states[i]; heat.children[i].title = "shard " + i; }
          const workers = document.getElementById("workers");
          workers.replaceChildren();
          row(workers, "th", ["worker", "host", "state", "shard", "rate (SPTEs/s)", "shards done"]);
          (s.workers || []).forEach(w => row(workers, "td", [w.name, w.host, w.state, w.shard === undefined ? "" : w.shard,
            w.sptes_per_second === undefined ? "" : (w.sptes_per_second / 1e6).toFixed(1) + " M", w.shards]));
          const table = document.getElementById("percentiles");
          table.replaceChildren();
          row(table, "th", ["policy", "operation", "count", "p50", "p99", "p99.9", "max"]);
          (s.percentiles || []).forEach(p => row(table, "td", [p.policy, p.operation, p.count, ns(p.p50_ns), ns(p.p99_ns), ns(p.p999_ns), ns(p.max_ns)]));
          if (s.charts !== undefined && s.charts !== lastCharts) { document.getElementById("charts").innerHTML = s.charts; lastCharts = s.charts; }
          if (s.verdict && !document.getElementById("report")) {
            const frame = document.createElement("iframe");
            frame.id = "report"; frame.title = "the final report"; frame.src = "/report.html" + location.search;
            document.getElementById("final").appendChild(frame);
          }
          if (s.verdict) {
            const v = document.getElementById("verdict");
            v.style.display = "block";
            v.className = s.verdict.exit_code === 0 ? "pass" : "fail";
            v.textContent = `verdict: ${s.verdict.summary} (exit ${s.verdict.exit_code})`;
          }
        }
        draw(__INITIAL_STATUS__);
        const events = new EventSource("/events" + location.search);
        events.onmessage = e => draw(JSON.parse(e.data));
        events.onerror = () => { if (document.getElementById("verdict").style.display === "block") events.close(); };
        </script>
        </body></html>
        """
}

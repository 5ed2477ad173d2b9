/* trapline dashboard: charts (uPlot, vendored), the live view and the API reference.
   Data comes from <script type="application/json"> blocks and from this server's JSON API;
   every string is inserted with textContent, never as HTML. */
(function () {
  "use strict";

  var COLOURS = ["#3a5bd9", "#8e44ad", "#d35400", "#16a085", "#17202a", "#7d8c1a"];

  function secs(text, month) {
    if (month && /^\d{4}-\d{2}$/.test(text)) text += "-01";
    var t = Date.parse(text.length === 10 ? text + "T00:00:00Z" : text.replace(/Z?$/, "Z"));
    return t / 1000;
  }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function markPlugin(marks) {
    return {
      hooks: {
        draw: function (u) {
          var ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = "#c0392b";
          ctx.lineWidth = 2 * devicePixelRatio;
          ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
          marks.forEach(function (m) {
            var x = u.valToPos(m, "x", true);
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
          });
          ctx.restore();
        },
      },
    };
  }

  function draw(box, spec) {
    var month = !!spec.month;
    var xs = (spec.x || []).map(function (t) { return secs(t, month); });
    var series = [{}];
    var data = [xs];
    var bars = spec.kind === "bars";
    if (spec.kind === "stacked") {
      // Months without evidence are zeros, not gaps the line would bridge.
      var byMonth = {};
      (spec.x || []).forEach(function (m, i) { byMonth[m] = spec.counts[i]; });
      var months = [];
      if (spec.x.length) {
        var y = +spec.x[0].slice(0, 4), mo = +spec.x[0].slice(5, 7);
        var last = spec.x[spec.x.length - 1];
        for (var guard = 0; guard < 1200; guard++) {
          var key = y + "-" + (mo < 10 ? "0" : "") + mo;
          months.push(key);
          if (key >= last) break;
          mo += 1; if (mo > 12) { mo = 1; y += 1; }
        }
      }
      xs = months.map(function (t) { return secs(t, true); });
      data = [xs];
      spec.series.forEach(function (name, i) {
        var vals = months.map(function (m) { return (byMonth[m] || {})[name] || 0; });
        if (!vals.some(function (v) { return v > 0; })) return;
        data.push(vals);
        series.push({ label: name.replace("_", " "), stroke: COLOURS[i % COLOURS.length], width: 2,
                      points: { show: false } });
      });
    } else {
      spec.series.forEach(function (s, i) {
        data.push(s.values);
        series.push({
          label: s.label, stroke: COLOURS[i], width: bars ? 0 : 2,
          fill: bars ? "rgba(58,91,217,0.55)" : undefined,
          paths: bars ? uPlot.paths.bars({ size: [0.8, 24], align: 0 }) : undefined,
          points: { show: false },
        });
      });
    }
    if (xs.length === 0) {
      box.appendChild(el("p", "Nothing to chart yet.", "muted"));
      return;
    }
    var marks = (spec.marks || []).map(function (m) { return secs(m.at || m, false); });
    var opts = {
      width: Math.max(300, box.clientWidth),
      height: 260,
      series: series,
      tzDate: utc,
      scales: { x: { time: true }, y: { range: function (u, lo, hi) { return [0, Math.max(1, hi * 1.08)]; } } },
      axes: [{ stroke: "#677184", grid: { stroke: "#eef0f5" } },
             { stroke: "#677184", grid: { stroke: "#eef0f5" }, size: 56 }],
      legend: { show: series.length > 2 || bars },
      plugins: marks.length ? [markPlugin(marks)] : [],
      cursor: { points: { show: !bars } },
    };
    var plot = new uPlot(opts, data, box);
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(300, box.clientWidth), height: 260 });
    });
  }

  function arrivals(box, spec) {
    // Trap mail and visits per minute over the last hour of activity shown.
    var times = (spec.messages || []).concat(spec.visits || []).map(function (t) { return secs(t); });
    if (!times.length) {
      box.appendChild(el("p", "No trap activity recorded yet.", "muted"));
      return;
    }
    var end = Math.ceil(Math.max.apply(null, times) / 60) * 60;
    var start = end - 3600;
    function bucket(list) {
      var out = new Array(60).fill(0);
      list.forEach(function (t) {
        var i = Math.floor((secs(t) - start) / 60);
        if (i >= 0 && i < 60) out[i] += 1;
      });
      return out;
    }
    var xs = [];
    for (var i = 0; i < 60; i++) xs.push(start + i * 60);
    new uPlot({
      width: Math.max(300, box.clientWidth), height: 200, tzDate: utc,
      series: [{}, { label: "trap mail", stroke: COLOURS[0], width: 2, points: { show: false } },
               { label: "visits", stroke: COLOURS[1], width: 2, points: { show: false } }],
      scales: { x: { time: true }, y: { range: function (u, lo, hi) { return [0, Math.max(1, hi * 1.1)]; } } },
      axes: [{ stroke: "#677184", grid: { stroke: "#eef0f5" } }, { stroke: "#677184", grid: { stroke: "#eef0f5" } }],
    }, [xs, bucket(spec.messages || []), bucket(spec.visits || [])], box);
  }

  function charts() {
    document.querySelectorAll("[data-chart]").forEach(function (box) {
      var src = document.getElementById("chart-" + box.getAttribute("data-chart"));
      if (!src) return;
      var spec = JSON.parse(src.textContent);
      if (spec.kind === "arrivals") arrivals(box, spec);
      else draw(box, spec);
    });
    document.querySelectorAll(".bar[data-w]").forEach(function (b) {
      b.style.width = Math.max(2, parseFloat(b.getAttribute("data-w")) * 0.6) + "px";
    });
  }

  function clock(t) { return t ? String(t).replace("T", " ").slice(5, 19) : "–"; }

  // Axis labels in UTC, as every time on these pages.
  function utc(ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); }

  function link(href, text) {
    var a = el("a", text);
    a.href = href;
    return a;
  }

  function fill(id, rows, cells, empty) {
    var body = document.getElementById(id);
    if (!body) return;
    body.textContent = "";
    if (!rows.length) {
      var tr = document.createElement("tr");
      var td = el("td", empty, "muted");
      td.colSpan = 5;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      cells(r).forEach(function (c) {
        var td = document.createElement("td");
        if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "" : String(c);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function live() {
    var state = document.getElementById("live-state");
    if (!state) return;
    function tick() {
      fetch("/api/v1/live", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (d) {
          state.setAttribute("data-state", "ok");
          document.getElementById("live-updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
          fill("live-messages", d.messages, function (m) {
            return [clock(m.ingested_at), m.origin_ip || "–", link("/messages/" + encodeURIComponent(m.id), m.subject || "(no subject)")];
          }, "No trap mail yet.");
          fill("live-visits", d.visits, function (v) {
            return [clock(v.visited_at), link("/ip/" + encodeURIComponent(v.ip || ""), v.ip || "–"), v.path, v.user_agent || ""];
          }, "No visits yet.");
          fill("live-sessions", d.sessions, function (s) {
            return [clock(s.started_at), s.peer_ip, s.helo || "", s.messages, s.end_reason || ""];
          }, "No SMTP sessions yet.");
        })
        .catch(function () { state.setAttribute("data-state", "error"); });
    }
    tick();
    setInterval(tick, 3000);
  }

  function apiDocs() {
    var box = document.getElementById("api-docs");
    if (!box) return;
    fetch("/openapi.json").then(function (r) { return r.json(); }).then(function (spec) {
      box.textContent = "";
      Object.keys(spec.paths).forEach(function (path) {
        var ops = spec.paths[path];
        Object.keys(ops).forEach(function (verb) {
          var op = ops[verb];
          var div = el("div", null, "op");
          div.appendChild(el("span", verb.toUpperCase(), "verb " + verb));
          div.appendChild(el("code", path));
          div.appendChild(el("span", "  " + (op.summary || ""), "muted"));
          var params = (op.parameters || []).map(function (p) {
            return p.name + (p.required ? "*" : "") + (p.description ? " (" + p.description + ")" : "");
          });
          if (params.length) div.appendChild(el("div", params.join(" · "), "params"));
          box.appendChild(div);
        });
      });
    }).catch(function () { box.textContent = "Could not load /openapi.json."; });
  }

  document.addEventListener("DOMContentLoaded", function () { charts(); live(); apiDocs(); });
})();

"use strict";
// mmtrace's HTML report: draws one process's address space over time
// (time across, addresses up: high addresses at the top) and its memory
// curves on canvases. Every string from the timeline goes into the page
// as text (textContent), never as markup.
window.mmtraceErrors = [];
window.addEventListener("error", function (e) {
  window.mmtraceErrors.push(String(e.message));
  document.body.dataset.status = "error";
  var el = document.getElementById("errors");
  el.hidden = false;
  el.textContent += "error: " + e.message + "\n";
});

(function () {
  var D = JSON.parse(document.getElementById("mmtrace-data").textContent);
  var $ = function (id) { return document.getElementById(id); };

  // Colours by kind; file mappings by what they hold (code, read-only
  // data, writable data).
  var KINDS = [
    ["code", "file r-x (code)", [214, 96, 77]],
    ["rodata", "file r-- (read-only)", [240, 170, 120]],
    ["data", "file rw- (data)", [196, 140, 200]],
    ["heap", "heap", [230, 160, 30]],
    ["stack", "stack", [60, 160, 80]],
    ["anon", "anonymous", [70, 120, 200]],
    ["shm", "shared memory", [0, 170, 170]],
    ["guard", "guard (---)", [150, 150, 150]],
    ["special", "vdso / vvar", [120, 90, 60]],
  ];
  var KIND_COLOR = {};
  KINDS.forEach(function (k) { KIND_COLOR[k[0]] = k[2]; });
  function colorKey(r, perms) {
    switch (r.kind) {
      case "file":
        if (perms.charAt(2) === "x") return "code";
        if (perms.charAt(1) === "w") return "data";
        return "rodata";
      case "heap": return "heap";
      case "stack": case "thread_stack": return "stack";
      case "shm": return "shm";
      case "guard": return "guard";
      case "vdso": case "vvar": case "vsyscall": return "special";
      default: return perms.lastIndexOf("---", 0) === 0 ? "guard" : "anon";
    }
  }
  // Fault density: the share of its pages that ever faulted (0..1).
  function density(r) {
    var f = r.faults;
    if (f[5] > 0) return Math.min(1, f[4] / f[5]);
    var last = r.ch[r.ch.length - 1];
    var size = last[3] - last[2];
    return size > 0 ? Math.min(1, f[0] * 4096 / size) : 0;
  }
  var ALPHA_LEVELS = 6;
  var fillCache = {};
  function fill(key, d) {
    var level = Math.round(d * (ALPHA_LEVELS - 1));
    var k = key + level;
    if (!fillCache[k]) {
      var c = KIND_COLOR[key];
      var a = 0.22 + 0.78 * level / (ALPHA_LEVELS - 1);
      fillCache[k] = "rgba(" + c[0] + "," + c[1] + "," + c[2] + "," + a.toFixed(2) + ")";
    }
    return fillCache[k];
  }

  function size(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }
  function hex(n) { return "0x" + n.toString(16); }
  function secs(ns) {
    if (ns === null || ns === undefined) return "-";
    return (ns / 1e9).toFixed(6) + " s";
  }
  function span(ns) {
    if (ns < 1e3) return ns + " ns";
    if (ns < 1e6) return (ns / 1e3).toFixed(1) + " us";
    if (ns < 1e9) return (ns / 1e6).toFixed(1) + " ms";
    return (ns / 1e9).toFixed(2) + " s";
  }
  function base(path) {
    var i = path.lastIndexOf("/");
    return i >= 0 && i < path.length - 1 ? path.slice(i + 1) : path;
  }
  function nameOf(r) {
    return r.path !== null ? D.paths[r.path] : "[" + r.kind + "]";
  }

  // Header, warnings, legend.
  $("title").textContent = D.title;
  document.title = "mmtrace: " + D.title;
  $("header").textContent = D.header;
  var facts = D.processes.length + " process" + (D.processes.length === 1 ? "" : "es") +
    ", " + span(D.duration) + " recorded";
  $("facts").textContent = facts;
  function warn(text) {
    var d = document.createElement("div");
    d.textContent = text;
    $("warnings").appendChild(d);
  }
  if (D.incomplete) warn("INCOMPLETE: the recording has no end record (cut short); what follows is what it holds.");
  if (D.regions_left_out > 0) {
    warn("Only the first " + D.max_regions + " regions are drawn: " + D.regions_left_out +
      " later ones are left out of this page (the text report below counts them all).");
  }
  if (D.changes_left_out > 0) {
    warn("A region keeps its first " + D.max_changes + " changes: " + D.changes_left_out +
      " later changes are not listed in the tooltips, and the extents they gave are drawn as one.");
  }
  KINDS.forEach(function (k) {
    var s = document.createElement("span");
    var i = document.createElement("i");
    i.style.background = "rgb(" + k[2].join(",") + ")";
    s.appendChild(i);
    s.appendChild(document.createTextNode(k[1]));
    $("legend").appendChild(s);
  });
  var heat = document.createElement("span");
  heat.className = "heat";
  var hi = document.createElement("i");
  hi.style.background = "linear-gradient(to right, rgba(70,120,200,.22), rgba(70,120,200,1))";
  heat.appendChild(document.createTextNode("pale = never touched "));
  heat.appendChild(hi);
  heat.appendChild(document.createTextNode(" solid = every page faulted"));
  $("legend").appendChild(heat);

  // The process selector: the biggest first (the data is so ordered).
  D.processes.forEach(function (p, i) {
    var o = document.createElement("option");
    o.value = String(i);
    o.textContent = p.pid + " " + p.comm + " (" + p.regions.length + " regions" +
      (p.samples.length ? ", peak " + size(peak(p)) + " mapped" : "") + ")";
    $("proc").appendChild(o);
  });
  function peak(p) {
    var m = 0;
    p.samples.forEach(function (s) { if (s[1] > m) m = s[1]; });
    return m;
  }

  var LEFT = 250, RIGHT = 16, TOP = 8, AXIS = 38;
  var GAP_BAND = 18, MIN_CLUSTER = 34;
  var state = { p: null, zoom: null, rects: null, layout: null };

  // Address layout of a process: the address range is cut at every
  // region boundary; each piece gets a height by its size to the power 0.4
  // (so a 4 KiB page and a 64 MiB reservation both show), and each piece
  // no region ever covered that is larger than `gap` is collapsed into a
  // labelled band of GAP_BAND px. High addresses at the top.
  function layout(p, height) {
    // Each region's hull (the lowest start and highest end of its
    // extents): a region that grew a page at a time is one piece.
    var hulls = [];
    p.regions.forEach(function (r) {
      var lo = Infinity, hi = -Infinity;
      r.ch.forEach(function (c) { if (c[3] > c[2]) { lo = Math.min(lo, c[2]); hi = Math.max(hi, c[3]); } });
      if (lo < hi) hulls.push([lo, hi]);
    });
    var bounds = [];
    hulls.forEach(function (h) { bounds.push(h[0]); bounds.push(h[1]); });
    bounds.sort(function (a, b) { return a - b; });
    var B = [];
    bounds.forEach(function (b) { if (!B.length || B[B.length - 1] !== b) B.push(b); });
    var n = Math.max(0, B.length - 1);
    var find = function (a) {
      var lo = 0, hi = B.length - 1;
      while (lo < hi) { var m = (lo + hi + 1) >> 1; if (B[m] <= a) lo = m; else hi = m - 1; }
      return lo;
    };
    var diff = new Int32Array(n + 1);
    hulls.forEach(function (h) { diff[find(h[0])]++; diff[find(h[1])]--; });
    var covered = new Uint8Array(n), run = 0;
    for (var i = 0; i < n; i++) { run += diff[i]; covered[i] = run > 0 ? 1 : 0; }
    var gap = 16 * 1024 * 1024, bands;
    for (;;) {
      bands = 0;
      for (i = 0; i < n; i++) if (!covered[i] && B[i + 1] - B[i] > gap) bands++;
      if (bands <= 24 || gap > Math.pow(2, 60)) break;
      gap *= 4;
    }
    var weight = new Float64Array(n), total = 0;
    // Each run of pieces between two bands (a cluster) gets at least
    // MIN_CLUSTER px, shared by its pieces by weight.
    var cluster = new Int32Array(n), cweights = [], nc = -1, inBand = true;
    for (i = n - 1; i >= 0; i--) {
      var bytes = B[i + 1] - B[i];
      if (!covered[i] && bytes > gap) { inBand = true; cluster[i] = -1; continue; }
      if (inBand) { nc++; cweights.push(0); inBand = false; }
      weight[i] = Math.pow(bytes, 0.4) * (covered[i] ? 1 : 0.5);
      cluster[i] = nc;
      cweights[nc] += weight[i];
      total += weight[i];
    }
    total = total || 1;
    var avail = Math.max(0, height - bands * GAP_BAND - cweights.length * MIN_CLUSTER);
    // From the top (the highest piece) down.
    var ys = new Float64Array(n), hs = new Float64Array(n);
    var y = TOP, clusters = [], gaps = [], cur = null;
    for (i = n - 1; i >= 0; i--) {
      if (!covered[i] && B[i + 1] - B[i] > gap) {
        if (cur) { clusters.push(cur); cur = null; }
        gaps.push({ y: y, h: GAP_BAND, bytes: B[i + 1] - B[i] });
        ys[i] = y; hs[i] = GAP_BAND;
        y += GAP_BAND;
        continue;
      }
      var h = avail * weight[i] / total + MIN_CLUSTER * weight[i] / (cweights[cluster[i]] || 1);
      if (!cur) cur = { hi: B[i + 1], y: y };
      cur.lo = B[i];
      ys[i] = y; hs[i] = h;
      y += h;
      cur.h = y - cur.y;
    }
    if (cur) clusters.push(cur);
    return {
      clusters: clusters, gaps: gaps, bottom: y,
      y: function (a) {
        if (!n || a < B[0] || a > B[n]) return null;
        var k = Math.min(find(a), n - 1);
        return ys[k] + (B[k + 1] - a) / (B[k + 1] - B[k]) * hs[k];
      },
    };
  }
  // What a cluster holds, in the words of a process's memory map.
  function nameClusters(p, clusters) {
    clusters.forEach(function (c) { c.has = {}; });
    p.regions.forEach(function (r) {
      var a = r.ch[0][2];
      var c = clusters.find(function (c) { return a >= c.lo && a < c.hi; });
      if (!c) return;
      var what = r.kind;
      // (exe is the name the exec was given, maybe relative: its base.)
      if (r.kind === "file" && p.exe && r.path !== null && base(D.paths[r.path]) === base(p.exe)) {
        what = "program";
      }
      c.has[what] = true;
    });
    clusters.forEach(function (c) {
      var h = c.has, names = [];
      if (h.program) names.push("program");
      if (h.heap) names.push("heap");
      if (h.stack) names.push("stack");
      if (!names.length) {
        if (h.file || h.anon || h.shm || h.guard) names.push("mmap area");
        else names.push(Object.keys(h).map(function (k) { return "[" + k + "]"; }).join(" "));
      }
      c.name = names.join(" + ");
    });
  }
  function linearLayout(lo, hi, height) {
    return {
      clusters: [{ lo: lo, hi: hi, y: TOP, h: height }], gaps: [], bottom: TOP + height,
      y: function (a) { return TOP + (hi - a) / (hi - lo || 1) * height; },
    };
  }

  function setupCanvas(c) {
    var dpr = window.devicePixelRatio || 1;
    var w = c.clientWidth || 1200, h = Number(c.getAttribute("height"));
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
    c.style.height = h + "px";
    var ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return { ctx: ctx, w: w, h: h };
  }

  function timeTicks(t0, t1, width) {
    var spanNs = t1 - t0, want = Math.max(2, Math.floor(width / 110));
    var step = Math.pow(10, Math.floor(Math.log10(spanNs / want)));
    [1, 2, 5, 10].some(function (m) { if (spanNs / (step * m) <= want) { step *= m; return true; } return false; });
    var ticks = [];
    for (var t = Math.ceil(t0 / step) * step; t <= t1; t += step) ticks.push(t);
    return { ticks: ticks, step: step };
  }
  function tickLabel(t, step) {
    if (step >= 1e9) return (t / 1e9).toFixed(0) + " s";
    if (step >= 1e6) return (t / 1e6).toFixed(0) + " ms";
    if (step >= 1e3) return (t / 1e3).toFixed(0) + " us";
    return t + " ns";
  }
  function drawTimeAxis(ctx, x, t0, t1, w, yTop, yBottom) {
    var tt = timeTicks(t0, t1, w);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#556";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    tt.ticks.forEach(function (t) {
      var px = x(t);
      ctx.strokeStyle = "rgba(0,0,0,.07)";
      ctx.beginPath(); ctx.moveTo(px + 0.5, yTop); ctx.lineTo(px + 0.5, yBottom); ctx.stroke();
      var label = tickLabel(t, tt.step), tw = ctx.measureText(label).width;
      ctx.textAlign = px + tw / 2 > x(t1) + RIGHT - 2 ? "right" : "center";
      ctx.fillText(label, ctx.textAlign === "right" ? x(t1) + RIGHT - 2 : px, yBottom + 4);
    });
  }

  function draw() {
    var began = performance.now();
    var p = state.p;
    var canvas = $("map");
    var height = Number(canvas.getAttribute("height")) - TOP - AXIS;
    var g = setupCanvas(canvas), ctx = g.ctx;
    var z = state.zoom;
    var t0 = z ? z.t0 : p.first, t1 = z ? z.t1 : Math.max(p.last, p.first + 1);
    var W = g.w - LEFT - RIGHT;
    var x = function (t) { return LEFT + (t - t0) / (t1 - t0) * W; };
    // Zoomed to a region: its addresses, linear; to a time span (a drag):
    // every address, as unzoomed.
    var L = z && z.lo !== null ? linearLayout(z.lo, z.hi, height) : layout(p, height);
    state.layout = L;
    state.x = x;
    state.t = [t0, t1];
    ctx.clearRect(0, 0, g.w, g.h);
    // Cluster backgrounds and address labels.
    ctx.font = "11px ui-monospace, 'DejaVu Sans Mono', monospace";
    ctx.textBaseline = "middle";
    if (!z || z.lo === null) nameClusters(p, L.clusters);
    L.clusters.forEach(function (c) {
      ctx.fillStyle = "#fff";
      ctx.fillRect(LEFT, c.y, W, c.h);
      ctx.fillStyle = "#556";
      ctx.textAlign = "right";
      if (c.name) {
        ctx.font = "bold 12px system-ui, sans-serif";
        ctx.fillStyle = "#334";
        ctx.textAlign = "left";
        ctx.fillText(c.name, 24, c.y + c.h / 2);
        ctx.font = "11px ui-monospace, 'DejaVu Sans Mono', monospace";
        ctx.fillStyle = "#556";
        ctx.textAlign = "right";
      }
      if (c.h >= 26) {
        ctx.fillText(hex(c.hi), LEFT - 6, c.y + 6);
        ctx.fillText(hex(c.lo), LEFT - 6, c.y + c.h - 6);
      } else {
        ctx.fillText(hex(c.lo), LEFT - 6, c.y + c.h / 2);
      }
    });
    L.gaps.forEach(function (gp) {
      ctx.fillStyle = "#eceef3";
      ctx.fillRect(0, gp.y, g.w, gp.h);
      ctx.strokeStyle = "#c4c8d4";
      ctx.setLineDash([4, 3]);
      ctx.beginPath();
      ctx.moveTo(0, gp.y + 0.5); ctx.lineTo(g.w, gp.y + 0.5);
      ctx.moveTo(0, gp.y + gp.h - 0.5); ctx.lineTo(g.w, gp.y + gp.h - 0.5);
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = "#778";
      ctx.textAlign = "left";
      ctx.font = "italic 11px system-ui, sans-serif";
      ctx.fillText("\u2026 " + size(gp.bytes) + " unmapped \u2026", LEFT + 8, gp.y + gp.h / 2);
      ctx.font = "11px ui-monospace, 'DejaVu Sans Mono', monospace";
    });
    drawTimeAxis(ctx, x, t0, t1, W, TOP, TOP + height);
    // Regions: one rectangle per extent, from each change to the next.
    ctx.save();
    ctx.beginPath();
    ctx.rect(LEFT, TOP, W, L.bottom - TOP);
    ctx.clip();
    var rects = [], labels = [];
    p.regions.forEach(function (r, idx) {
      var end = r.died !== null ? r.died : t1;
      var d = density(r);
      var bx0 = Infinity, bx1 = -Infinity, by0 = Infinity, by1 = -Infinity;
      for (var i = 0; i < r.ch.length; i++) {
        var c = r.ch[i];
        if (c[3] <= c[2]) continue; // empty (a heap before its first brk)
        var from = c[0], to = i + 1 < r.ch.length ? r.ch[i + 1][0] : end;
        var ya = L.y(c[3]), yb = L.y(c[2]);
        if (ya === null || yb === null) continue;
        var x0 = x(from), x1 = Math.max(x(to), x0 + 1.5);
        var y0 = ya, y1 = Math.max(yb, ya + 1.5);
        ctx.fillStyle = fill(colorKey(r, c[4]), d);
        ctx.fillRect(x0, y0, x1 - x0, y1 - y0);
        if (y1 - y0 >= 5 && x1 - x0 >= 5) {
          ctx.strokeStyle = "rgba(0,0,0,.35)";
          ctx.lineWidth = 0.6;
          ctx.strokeRect(x0 + 0.3, y0 + 0.3, x1 - x0 - 0.6, y1 - y0 - 0.6);
        }
        rects.push([x0, x1, y0, y1, idx]);
        bx0 = Math.min(bx0, x0); bx1 = Math.max(bx1, x1);
        by0 = Math.min(by0, y0); by1 = Math.max(by1, y1);
        if (y1 - y0 >= 13 && x1 - x0 >= 60) labels.push([x0, y0, x1, y1, r]);
      }
      r._box = bx0 <= bx1 ? [bx0, bx1, by0, by1] : null;
    });
    // Names inside the rectangles that have room for them.
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    labels.slice(0, 400).forEach(function (l) {
      var r = l[4];
      var text = r.path !== null ? base(D.paths[r.path]) : "[" + r.kind + "]";
      var room = Math.max(0, Math.min(l[2], LEFT + W) - Math.max(l[0], LEFT) - 8);
      if (room < 30) return;
      while (text.length > 3 && ctx.measureText(text).width > room) text = text.slice(0, -2);
      ctx.fillStyle = "rgba(20,20,30,.9)";
      ctx.fillText(text, Math.max(l[0], LEFT) + 4, (l[1] + l[3]) / 2);
    });
    ctx.restore();
    // Its execs and exit, and the intervals when its model was uncertain.
    ctx.save();
    ctx.beginPath();
    ctx.rect(LEFT, 0, W, g.h);
    ctx.clip();
    p.uncertain.forEach(function (u) {
      var a = x(u[0]), b = x(u[1] !== null ? u[1] : t1);
      ctx.fillStyle = "rgba(220,40,40,.10)";
      ctx.fillRect(a, TOP, Math.max(b - a, 2), L.bottom - TOP);
      ctx.fillStyle = "rgba(200,30,30,.9)";
      ctx.font = "11px system-ui, sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "top";
      ctx.fillText("uncertain", a + 3, TOP + 2);
    });
    var marks = p.execs.map(function (t) { return [t, "exec"]; });
    if (p.exit_ns !== null) marks.push([p.exit_ns, "exit"]);
    marks.forEach(function (m) {
      var px = Math.round(x(m[0])) + 0.5;
      ctx.strokeStyle = "rgba(30,30,60,.6)";
      ctx.setLineDash([3, 3]);
      ctx.beginPath(); ctx.moveTo(px, TOP); ctx.lineTo(px, TOP + height + 28); ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = "rgba(30,30,60,.8)";
      ctx.font = "10px system-ui, sans-serif";
      ctx.textBaseline = "top";
      ctx.textAlign = px > LEFT + W - 30 ? "right" : "left";
      ctx.fillText(m[1], px + (ctx.textAlign === "right" ? -3 : 3), TOP + height + 18);
    });
    if (p.oom_kill_ns !== null) oomMark(ctx, x(p.oom_kill_ns), TOP, TOP + height + 28, LEFT + W, TOP + 2);
    ctx.restore();
    // Time axis label, zoom note.
    ctx.fillStyle = "#556";
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText("time since the recording started \u2192", 4, TOP + height + 4);
    ctx.save();
    ctx.translate(10, TOP + height / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "center";
    ctx.fillText("address (high at the top) \u2192", 0, 0);
    ctx.restore();
    state.rects = rects;
    drawCurves(t0, t1, x, W);
    publish(p, t0, t1, W, performance.now() - began);
    $("reset").disabled = !z;
    $("maptitle").textContent = "Address space of " + p.pid + " (" + p.comm + ") over time" +
      (z ? " \u2014 zoomed" : "");
  }

  // The moment of the OOM kill: a solid red line from y0 to y1, named at
  // the top (to its left when near the right edge).
  function oomMark(ctx, x0, y0, y1, right, labelY) {
    var px = Math.round(x0) + 0.5;
    ctx.strokeStyle = "rgba(200,30,30,.95)";
    ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(px, y0); ctx.lineTo(px, y1); ctx.stroke();
    ctx.lineWidth = 1;
    ctx.fillStyle = "rgba(190,20,20,1)";
    ctx.font = "bold 11px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.textAlign = px > right - 60 ? "right" : "left";
    ctx.fillText("OOM kill", px + (ctx.textAlign === "right" ? -4 : 4), labelY);
  }

  // Mapped, heap, stack, resident (bytes) and faults per second.
  function drawCurves(t0, t1, x, W) {
    var p = state.p;
    var g = setupCanvas($("curves")), ctx = g.ctx;
    ctx.clearRect(0, 0, g.w, g.h);
    var top1 = 20, h1 = 120, top2 = top1 + h1 + 16, h2 = g.h - top2 - AXIS;
    var S = p.samples;
    var series = [
      [1, "mapped", "#3b6fc9"], [2, "heap", "#e6a01e"], [3, "stack", "#3ca050"], [4, "resident (RSS)", "#9b4fb0"],
    ];
    var max = 1;
    S.forEach(function (s) { for (var k = 1; k <= 4; k++) if (s[k] > max) max = s[k]; });
    // Linear from 0, or (the box ticked) logarithmic from 4 KiB.
    var log = $("logscale").checked, floor = 4096;
    var scale = function (v) {
      if (!log) return v / max;
      return Math.max(0, Math.log(Math.max(v, floor) / floor) / Math.log(Math.max(max, floor * 2) / floor));
    };
    var rates = [];
    for (var i = 1; i < S.length; i++) {
      var dt = S[i][0] - S[i - 1][0];
      if (dt > 0) rates.push([S[i - 1][0], S[i][0], Math.max(0, S[i][5] - S[i - 1][5]) * 1e9 / dt]);
    }
    var rmax = 1;
    rates.forEach(function (r) { if (r[2] > rmax) rmax = r[2]; });
    [[top1, h1], [top2, h2]].forEach(function (b) {
      ctx.fillStyle = "#fff";
      ctx.fillRect(LEFT, b[0], W, b[1]);
    });
    drawTimeAxis(ctx, x, t0, t1, W, top1, top2 + h2);
    ctx.save();
    ctx.beginPath();
    ctx.rect(LEFT, 0, W, g.h);
    ctx.clip();
    series.forEach(function (sr) {
      var k = sr[0];
      ctx.strokeStyle = sr[2];
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      var started = false, lastY = null;
      S.forEach(function (s) {
        if (s[k] < 0) return;
        var px = x(s[0]), py = top1 + h1 - scale(s[k]) * h1;
        if (!started) { ctx.moveTo(px, py); started = true; } else { ctx.lineTo(px, lastY); ctx.lineTo(px, py); }
        lastY = py;
      });
      if (started) ctx.lineTo(x(t1), lastY);
      ctx.stroke();
    });
    ctx.fillStyle = "rgba(200,60,60,.75)";
    rates.forEach(function (r) {
      var x0 = x(r[0]), x1 = Math.max(x(r[1]), x0 + 1);
      var hh = r[2] / rmax * h2;
      ctx.fillRect(x0, top2 + h2 - hh, x1 - x0, hh);
    });
    if (p.oom_kill_ns !== null) oomMark(ctx, x(p.oom_kill_ns), top1, top2 + h2, LEFT + W, top1 + 2);
    ctx.restore();
    // Scales and legends.
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    ctx.fillStyle = "#556";
    ctx.fillText(size(max), LEFT - 6, top1 + 6);
    ctx.fillText(log ? "4 KiB" : "0", LEFT - 6, top1 + h1 - 4);
    if (log) ctx.fillText("log scale", LEFT - 6, top1 + h1 / 2);
    ctx.fillText(Math.round(rmax).toLocaleString("en") + "/s", LEFT - 6, top2 + 6);
    ctx.fillText("faults", LEFT - 6, top2 + h2 / 2 + 4);
    ctx.fillText("0", LEFT - 6, top2 + h2 - 4);
    ctx.textAlign = "left";
    var lx = LEFT + 6;
    series.concat([[5, "page faults per second", "rgb(200,60,60)"]]).forEach(function (sr) {
      ctx.fillStyle = sr[2];
      ctx.fillRect(lx, 6, 14, 3);
      ctx.fillStyle = "#334";
      ctx.fillText(sr[1], lx + 18, 8);
      lx += ctx.measureText(sr[1]).width + 36;
    });
    if (!S.length) {
      ctx.fillStyle = "#778";
      ctx.fillText("no counter samples for this process", LEFT + 8, top1 + h1 / 2);
    } else if (p.thinned) {
      ctx.fillStyle = "#778";
      ctx.fillText("(" + p.samples_seen + " samples, thinned evenly to " + S.length + ")", lx, 8);
    }
  }

  // What was drawn, for tests and tools: window.mmtraceDrawn, and the same
  // in #mmtrace-drawn when it is small enough.
  function publish(p, t0, t1, W, ms) {
    var regions = [];
    p.regions.forEach(function (r) {
      if (r._box) regions.push({ id: r.id, x0: r._box[0], x1: r._box[1], y0: r._box[2], y1: r._box[3] });
    });
    var drawn = {
      process: p.pid, proc: p.proc, zoomed: !!state.zoom, ms: Math.round(ms),
      plot: { left: LEFT, width: W, t0: t0, t1: t1 },
      count: regions.length, regions: regions, samples: p.samples.length,
      clusters: state.layout.clusters.length, gaps: state.layout.gaps.length,
      // The OOM kill's mark, where the picture and the curves show it.
      oom: p.oom_kill_ns === null ? null : { t: p.oom_kill_ns, x: state.x(p.oom_kill_ns) },
    };
    window.mmtraceDrawn = drawn;
    $("mmtrace-drawn").textContent = JSON.stringify(regions.length <= 20000 ? drawn : {
      process: drawn.process, proc: drawn.proc, count: drawn.count, plot: drawn.plot, ms: drawn.ms,
      regions: null, oom: drawn.oom,
    });
  }

  function hit(mx, my) {
    var rects = state.rects;
    for (var i = rects.length - 1; i >= 0; i--) {
      var r = rects[i];
      if (mx >= r[0] && mx <= r[1] && my >= r[2] - 1 && my <= r[3] + 1) return state.p.regions[r[4]];
    }
    return null;
  }
  function story(r) {
    var last = r.ch[r.ch.length - 1];
    var f = r.faults;
    var lines = [
      nameOf(r),
      hex(last[2]) + "-" + hex(last[3]) + "  " + size(last[3] - last[2]) + "  " + last[4] + "  " + r.kind,
      "born  " + secs(r.born) + " by " + r.born_by,
      r.died !== null ? "died  " + secs(r.died) + " by " + r.died_by + " (lived " + span(r.died - r.born) + ")"
        : "alive at the end",
      "faults " + f[0] + " (read " + f[1] + ", write " + f[2] + ", exec " + f[3] + "), touched " +
        size(f[4]) + " of " + size(f[5] || (last[3] - last[2])),
    ];
    if (r.ch.length > 1 || r.more) {
      lines.push("changes:");
      var shown = r.ch.slice(1, 13);
      shown.forEach(function (c) {
        lines.push("  " + secs(c[0]) + "  " + c[1] + "  " + hex(c[2]) + "-" + hex(c[3]) + " " + c[4]);
      });
      var rest = r.ch.length - 1 - shown.length + r.more;
      if (rest > 0) lines.push("  ... and " + rest + " more");
    }
    return lines.join("\n");
  }

  var map = $("map"), tip = $("tip");
  map.addEventListener("mousemove", function (e) {
    var b = map.getBoundingClientRect();
    var mx = e.clientX - b.left, my = e.clientY - b.top;
    showTip(hit(mx, my), mx, my);
  });
  function showTip(r, mx, my) {
    var b = map.getBoundingClientRect();
    if (!r) { tip.hidden = true; return; }
    tip.textContent = story(r);
    tip.hidden = false;
    var left = mx + 14, topPx = my + 14;
    if (left + tip.offsetWidth > b.width) left = Math.max(0, mx - tip.offsetWidth - 14);
    if (topPx + tip.offsetHeight > b.height) topPx = Math.max(0, my - tip.offsetHeight - 14);
    tip.style.left = left + "px";
    tip.style.top = topPx + "px";
  }
  map.addEventListener("mouseleave", function () { tip.hidden = true; });
  // A drag across time zooms to that span; a click on a region, to it.
  var drag = null;
  map.addEventListener("mousedown", function (e) {
    var b = map.getBoundingClientRect();
    drag = { x: e.clientX - b.left, moved: false };
  });
  map.addEventListener("mousemove", function (e) {
    if (!drag) return;
    var b = map.getBoundingClientRect();
    var mx = e.clientX - b.left;
    if (Math.abs(mx - drag.x) > 5) drag.moved = true;
    if (drag.moved) {
      $("sel").hidden = false;
      $("sel").style.left = Math.min(mx, drag.x) + "px";
      $("sel").style.width = Math.abs(mx - drag.x) + "px";
    }
  });
  map.addEventListener("mouseup", function (e) {
    var b = map.getBoundingClientRect();
    var mx = e.clientX - b.left, d = drag;
    drag = null;
    $("sel").hidden = true;
    if (!d) return;
    if (!d.moved) {
      zoomTo(hit(mx, e.clientY - b.top));
      return;
    }
    var W = b.width - LEFT - RIGHT, t = state.t;
    var at = function (px) { return t[0] + (Math.min(Math.max(px, LEFT), LEFT + W) - LEFT) / W * (t[1] - t[0]); };
    var a = at(Math.min(mx, d.x)), c = at(Math.max(mx, d.x));
    if (c - a < 1) return;
    state.zoom = { t0: a, t1: c, lo: null, hi: null };
    tip.hidden = true;
    draw();
  });
  function zoomTo(r) {
    if (!r) return;
    var lo = Infinity, hi = -Infinity;
    r.ch.forEach(function (c) { lo = Math.min(lo, c[2]); hi = Math.max(hi, c[3]); });
    var end = r.died !== null ? r.died : state.p.last;
    var dt = Math.max(end - r.born, 1000), da = Math.max(hi - lo, 4096);
    state.zoom = {
      t0: Math.max(state.p.first, r.born - dt * 0.25), t1: end + dt * 0.25,
      lo: Math.max(0, lo - da * 0.5), hi: hi + da * 0.5,
    };
    tip.hidden = true;
    draw();
  }
  function unzoom() { if (state.zoom) { state.zoom = null; draw(); } }
  map.addEventListener("dblclick", unzoom);
  $("reset").addEventListener("click", unzoom);
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") unzoom(); });

  function select(i) {
    state.p = D.processes[i];
    state.zoom = null;
    $("report").textContent = state.p.report;
    // Its OOM kill, what grew and the curves before it, above its picture.
    $("oombox").hidden = !state.p.oom;
    $("oom").textContent = state.p.oom || "";
    draw();
  }
  $("proc").addEventListener("change", function () { select(Number($("proc").value)); });
  $("logscale").addEventListener("change", function () { if (state.p) draw(); });
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { if (state.p) draw(); }, 150);
  });

  // The address may choose: #pid=PID (a process), #hover=ID (shows that
  // region's tooltip, as a pointer on it would: for screenshots), #log=0
  // (the curves on a linear scale; log=1, the default, logarithmic),
  // #zoom=ID (zoomed to that region, as a click on it does), #span=T0-T1
  // (zoomed to that time, in ns, as a drag does), joined by &.
  var want = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
    var i = kv.indexOf("=");
    if (i > 0) want[kv.slice(0, i)] = kv.slice(i + 1);
  });
  if (want.log === "0" || want.log === "1") $("logscale").checked = want.log === "1";
  if (D.processes.length) {
    var first = 0;
    D.processes.forEach(function (p, i) { if (String(p.pid) === want.pid) first = i; });
    $("proc").value = String(first);
    select(first);
    if (want.hover !== undefined) {
      // A region id, or a kind (its region with the most changes).
      var pick = null;
      state.p.regions.forEach(function (r) {
        if (!r._box) return;
        if (String(r.id) === want.hover) pick = r;
        else if (r.kind === want.hover && (!pick || (pick.kind === want.hover && r.ch.length > pick.ch.length))) pick = r;
      });
      if (pick) showTip(pick, (pick._box[0] + pick._box[1]) / 2, (pick._box[2] + pick._box[3]) / 2);
    }
    if (want.span !== undefined) {
      var span = want.span.split("-").map(Number);
      if (span.length === 2 && span[1] > span[0]) {
        state.zoom = { t0: span[0], t1: span[1], lo: null, hi: null };
        draw();
      }
    }
    if (want.zoom !== undefined) {
      zoomTo(state.p.regions.find(function (r) { return String(r.id) === want.zoom; }) || null);
    }
  } else {
    $("maptitle").textContent = "No processes were recorded";
    $("report").textContent = D.header;
    window.mmtraceDrawn = { process: null, count: 0, regions: [] };
    $("mmtrace-drawn").textContent = JSON.stringify(window.mmtraceDrawn);
  }
  if (document.body.dataset.status === "loading") document.body.dataset.status = "ok";
})();
